//! A JSONL file → one record per `\n`-terminated line, in file order, read a chunk at a
//! time ahead of the router so that the workers validate while it routes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Assignment, Origin, Poll, Source, SourceError};
use crate::decode::{Decoder, LineCutter};
use crate::workers::Workers;

/// Bytes read at a time from a file or stdin: a chunk of about a thousand records, validated
/// as one job.
pub const READ_CHUNK: usize = 128 << 10;

pub struct FileSource {
    path: PathBuf,
    file: File,
    origin: Origin,
    cutter: LineCutter,
    decoder: Decoder,
    chunk: usize,
    ended: bool,
    /// Whether the one assignment, of the whole input, was handed out.
    assigned: bool,
}

impl FileSource {
    /// Opens `path`. A directory is refused here rather than at first read.
    pub fn open(path: &Path, workers: Workers) -> Result<Self, SourceError> {
        Self::with_chunk(path, workers, READ_CHUNK)
    }

    fn with_chunk(path: &Path, workers: Workers, chunk: usize) -> Result<Self, SourceError> {
        let open_error = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        if file.metadata().map_err(open_error)?.is_dir() {
            return Err(open_error(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        Ok(FileSource {
            path: path.to_path_buf(),
            file,
            origin: Origin::File {
                path: path.to_string_lossy().into(),
            },
            cutter: LineCutter::default(),
            decoder: Decoder::new(workers, 1),
            chunk,
            ended: false,
            assigned: false,
        })
    }

    /// Reads chunks until the decoder has enough ahead or the file ends.
    fn read_ahead(&mut self) -> Result<(), SourceError> {
        while !self.ended && self.decoder.wants_more() {
            let (lines, ended) =
                self.cutter
                    .read(&mut self.file, self.chunk)
                    .map_err(|source| SourceError::Read {
                        path: self.path.clone(),
                        source,
                    })?;
            self.ended = ended;
            if let Some(lines) = lines {
                self.decoder.push(lines);
            }
        }
        Ok(())
    }
}

impl Source for FileSource {
    /// Blocks until the next line is read and validated: a file never idles.
    fn poll(&mut self, _wait: Duration) -> Result<Poll<'_>, SourceError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(Poll::Assigned(Assignment::whole()));
        }
        self.read_ahead()?;
        Ok(match self.decoder.next(&self.origin) {
            Some(decoded) => Poll::Record(decoded),
            None => Poll::End,
        })
    }

    fn bytes_read(&self) -> u64 {
        self.decoder.lent_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(content: &[u8]) -> Vec<(Vec<u8>, i64)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, content).unwrap();
        let mut all = Vec::new();
        // Tiny chunks make lines straddle chunk ends; the answer must not change.
        for (chunk, threads) in [(READ_CHUNK, 1), (1, 1), (2, 2), (3, 1), (5, 3)] {
            let workers = Workers::new(std::num::NonZero::new(threads).unwrap());
            let mut source = FileSource::with_chunk(&path, workers, chunk).unwrap();
            let mut out = Vec::new();
            assert!(matches!(
                source.poll(Duration::ZERO).unwrap(),
                Poll::Assigned(a) if a.partitions == [0]
            ));
            while let Poll::Record(d) = source.poll(Duration::ZERO).unwrap() {
                out.push((d.record.bytes.to_vec(), d.record.offset));
            }
            assert_eq!(source.bytes_read(), content.len() as u64);
            all.push(out);
        }
        assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
        all.remove(0)
    }

    #[test]
    fn splits_on_newline_only_and_keeps_every_line() {
        let got = lines(b"a\r\n\nb\xff\rc\nlast");
        assert_eq!(
            got,
            vec![
                (b"a\r".to_vec(), 1),
                (b"".to_vec(), 2),
                (b"b\xff\rc".to_vec(), 3),
                (b"last".to_vec(), 4)
            ]
        );
        assert_eq!(lines(b"x\n"), vec![(b"x".to_vec(), 1)]);
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn missing_files_and_directories_are_named() {
        let err = FileSource::open(Path::new("/no/such/file.jsonl"), Workers::none())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/file.jsonl"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = FileSource::open(dir.path(), Workers::none()).err().unwrap();
        assert!(err.to_string().contains("directory"), "{err}");
    }
}
