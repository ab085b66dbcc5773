//! A JSONL file → one record per `\n`-terminated line, in file order.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Assignment, Origin, Poll, Record, Source, SourceError};

const READ_BUFFER: usize = 1 << 20;

pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    origin: Origin,
    /// Holds a line that straddles the end of the read buffer; other lines are not copied.
    line: Vec<u8>,
    /// Bytes of the read buffer handed out by the last poll, consumed at the next one.
    lent: usize,
    line_number: i64,
    bytes_read: u64,
    /// Whether the one assignment, of the whole input, was handed out.
    assigned: bool,
}

impl FileSource {
    /// Opens `path`. A directory is refused here rather than at first read.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        Self::with_buffer(path, READ_BUFFER)
    }

    fn with_buffer(path: &Path, capacity: usize) -> Result<Self, SourceError> {
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
            reader: BufReader::with_capacity(capacity, file),
            origin: Origin::File {
                path: path.to_string_lossy().into(),
            },
            line: Vec::with_capacity(1024),
            lent: 0,
            line_number: 0,
            bytes_read: 0,
            assigned: false,
        })
    }
}

impl Source for FileSource {
    /// Blocks until a whole line is read: a file never idles, and stdin is read as it comes.
    fn poll(&mut self, _wait: Duration) -> Result<Poll<'_>, SourceError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(Poll::Assigned(Assignment::whole()));
        }
        let read_error = |source| SourceError::Read {
            path: self.path.clone(),
            source,
        };
        self.reader.consume(std::mem::take(&mut self.lent));
        let buffered = self.reader.fill_buf().map_err(read_error)?;
        let (line, taken): (&[u8], usize) = match memchr::memchr(b'\n', buffered) {
            Some(end) => {
                self.lent = end + 1;
                (&self.reader.buffer()[..end], end + 1)
            }
            None => {
                self.line.clear();
                let n = self
                    .reader
                    .read_until(b'\n', &mut self.line)
                    .map_err(read_error)?;
                (self.line.strip_suffix(b"\n").unwrap_or(&self.line), n)
            }
        };
        if taken == 0 {
            return Ok(Poll::End);
        }
        self.bytes_read += taken as u64;
        self.line_number += 1;
        Ok(Poll::Record(Record {
            bytes: line,
            offset: self.line_number,
            origin: &self.origin,
            time: None,
        }))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
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
        // Tiny buffers make lines straddle buffer ends; the answer must not change.
        for capacity in [READ_BUFFER, 1, 2, 3, 5] {
            let mut source = FileSource::with_buffer(&path, capacity).unwrap();
            let mut out = Vec::new();
            assert!(matches!(
                source.poll(Duration::ZERO).unwrap(),
                Poll::Assigned(a) if a.partitions == [0]
            ));
            while let Poll::Record(r) = source.poll(Duration::ZERO).unwrap() {
                out.push((r.bytes.to_vec(), r.offset));
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
        let err = FileSource::open(Path::new("/no/such/file.jsonl"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/file.jsonl"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = FileSource::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("directory"), "{err}");
    }
}
