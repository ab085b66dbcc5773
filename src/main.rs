//! The `pageview` command line: parses the arguments, validates them into a plan, and
//! carries it out (or, with `--check-config`, says what it would do).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use pageview::command::{EXIT_INTERRUPTED, Plan};
use pageview::config::Cli;

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = pageview::logging::init(cli.log_format, &cli.log_level) {
        eprintln!("pageview: error: {e}");
        exit(ExitCode::FAILURE);
    }
    let result = Plan::new(cli.command).and_then(|plan| {
        if cli.check_config {
            println!("configuration is valid: {}", plan.summary());
            return Ok(ExitCode::SUCCESS);
        }
        plan.execute()
    });
    exit(match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pageview: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    })
}

/// Ends the process once its work is done and written, without running exit handlers:
/// librdkafka may still be closing a client on a thread of its own, and mimalloc's exit
/// handler collecting the heap while such a thread frees memory crashed the process (a
/// SIGSEGV in `mi_process_done` after a clean stop, seen in the kill -9 chaos test).
fn exit(code: ExitCode) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let code = if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(EXIT_INTERRUPTED) {
        i32::from(EXIT_INTERRUPTED)
    } else {
        1
    };
    // SAFETY: every file the run wrote is closed and durable and stdout and stderr are
    // flushed; nothing else needs the exit handlers.
    unsafe { libc::_exit(code) }
}

/// The error and its causes on one line, each cause once: our error types already quote
/// their source in their message, and repeating it would double the line.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (index 15 in both v2 and v3); libmimalloc-sys does
/// not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Every batch frees and allocates column buffers of a few hundred KiB. mimalloc hands freed
/// memory back to the kernel after 10 ms, so each batch page-faulted fresh zeroed pages (a
/// tenth of the run time in profiles); never purging keeps them for reuse. Peak memory is
/// unchanged: it is what the batches need at once.
///
/// Transparent huge pages made every 2 MiB the allocator touched resident whole: peak RSS
/// was twice what the process used (90 against 43 MiB for a 5M-event file on two threads,
/// 116 against 40 for sparse input), and zeroing the untouched rest cost as much CPU as the
/// fewer page faults saved. mimalloc asks for them on memory it reserved before `main`, so
/// they are turned off for the process rather than by its option.
fn tune_allocator() {
    // SAFETY: sets an allocator option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process's memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
}
