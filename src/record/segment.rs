//! The journal's files on disk (see `journal.rs` for the layout), and a
//! reader that walks one of them backwards, newest line first, one block at
//! a time: `log -n 20` reads the end of the history, never all of it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The active segment, the only file ever appended to.
pub(crate) const ACTIVE: &str = "journal.jsonl";
/// Where sealed segments go: `journal/000001.jsonl`, `journal/000002.jsonl` ...
pub(crate) const SEALED_DIR: &str = "journal";
/// The active segment is sealed once it is this big (at the next run).
/// Small because every run publishes the active segment whole to
/// `refs/rollgate/journal` (a sealed one is published once and reused):
/// at 32 MiB that hashing and compressing cost a push up to half a second
/// after its deploy, at 1 MiB about 15 ms at most. A million runs make
/// about 850 sealed files.
#[cfg(not(test))]
pub(crate) const SEGMENT_BYTES: u64 = 1 << 20;
/// Small in unit tests, so that they seal segments without writing 1 MB.
#[cfg(test)]
pub(crate) const SEGMENT_BYTES: u64 = 16 << 10;

/// One journal file.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// 1, 2, ... oldest first; the active segment's is one more than the
    /// newest sealed one (the number it gets when it is sealed).
    pub(crate) number: u32,
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
    pub(crate) ino: u64,
}

/// The name people see for segment `number`, relative to `rollgate/`.
pub(crate) fn name(number: u32, active: u32) -> String {
    if number == active {
        ACTIVE.to_string()
    } else {
        sealed_name(number)
    }
}

fn sealed_name(number: u32) -> String {
    format!("{SEALED_DIR}/{number:06}.jsonl")
}

/// Sealed segments, oldest first.
pub(crate) fn sealed(dir: &Path) -> Result<Vec<Segment>> {
    let sealed_dir = dir.join(SEALED_DIR);
    let entries = match fs::read_dir(&sealed_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", sealed_dir.display()));
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", sealed_dir.display()))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let meta = fs::metadata(&path)
            .with_context(|| format!("cannot read the journal segment {}", path.display()))?;
        out.push(Segment {
            number,
            path,
            len: meta.len(),
            ino: meta.ino(),
        });
    }
    out.sort_by_key(|s| s.number);
    Ok(out)
}

/// The active segment (`None` if it does not exist yet), numbered after `sealed`.
pub(crate) fn active(dir: &Path, sealed: &[Segment]) -> Result<Option<Segment>> {
    let path = dir.join(ACTIVE);
    match fs::metadata(&path) {
        Ok(meta) => Ok(Some(Segment {
            number: active_number(sealed),
            path,
            len: meta.len(),
            ino: meta.ino(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the journal {}", path.display())),
    }
}

pub(crate) fn active_number(sealed: &[Segment]) -> u32 {
    sealed.last().map_or(1, |s| s.number + 1)
}

/// Seals the active segment under the next number. Called with the deploy
/// lock held, before anything is appended; a crash between the rename and
/// the next append leaves no active segment, which the next open creates.
pub(crate) fn seal_active(dir: &Path) -> Result<()> {
    let sealed = sealed(dir)?;
    let to = dir.join(sealed_name(active_number(&sealed)));
    let sealed_dir = dir.join(SEALED_DIR);
    fs::create_dir_all(&sealed_dir)
        .with_context(|| format!("cannot create {}", sealed_dir.display()))?;
    let from = dir.join(ACTIVE);
    fs::rename(&from, &to).with_context(|| {
        format!(
            "cannot move the journal {} to {}",
            from.display(),
            to.display()
        )
    })?;
    // Make the rename durable before records land in a new active segment.
    for d in [&sealed_dir, dir] {
        File::open(d)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", d.display()))?;
    }
    Ok(())
}

const BLOCK: u64 = 64 << 10;

/// The lines of a file from the last one back to the first, read a block at
/// a time from the end. A last line without its newline (a write cut short)
/// is not a line: it is skipped (the state reports it). Nothing is read
/// before the first call, so a reader can be set up for every segment at
/// once, pinning the files a concurrent run may rename.
pub(crate) struct Backwards {
    file: File,
    /// `buf` holds the file's bytes from `pos` up to the current end.
    pos: u64,
    buf: Vec<u8>,
    started: bool,
    done: bool,
}

impl Backwards {
    pub(crate) fn new(file: File) -> io::Result<Backwards> {
        let len = file.metadata()?.len();
        Ok(Backwards {
            file,
            pos: len,
            buf: Vec::new(),
            started: false,
            done: len == 0,
        })
    }

    /// The previous line, without its newline; `None` before the first.
    pub(crate) fn prev_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.started {
            self.started = true;
            // Whatever follows the last newline is not a whole line.
            self.piece()?;
        }
        self.piece()
    }

    fn piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(i) = self.buf.iter().rposition(|b| *b == b'\n') {
                let line = self.buf.split_off(i + 1);
                self.buf.truncate(i);
                return Ok(Some(line));
            }
            if self.pos == 0 {
                self.done = true;
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            let n = BLOCK.min(self.pos);
            self.pos -= n;
            let mut block = vec![0; n as usize];
            self.file.read_exact_at(&mut block, self.pos)?;
            block.extend_from_slice(&self.buf);
            self.buf = block;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_backwards(content: &[u8]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, content).unwrap();
        let mut b = Backwards::new(File::open(&path).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(l) = b.prev_line().unwrap() {
            out.push(String::from_utf8(l).unwrap());
        }
        out
    }

    #[test]
    fn reads_lines_newest_first_across_blocks_and_skips_a_torn_tail() {
        assert!(lines_backwards(b"").is_empty());
        assert!(lines_backwards(b"{\"ru").is_empty());
        assert_eq!(lines_backwards(b"a\nbb\n"), ["bb", "a"]);
        assert_eq!(lines_backwards(b"a\nbb\n{\"ru"), ["bb", "a"]);
        // Lines longer than a block, and many blocks.
        let long = "x".repeat(BLOCK as usize * 2 + 17);
        let mut content = String::new();
        let mut want = Vec::new();
        for i in 0..30_000 {
            let line = if i % 1000 == 7 {
                long.clone()
            } else {
                format!("line {i}")
            };
            content.push_str(&line);
            content.push('\n');
            want.push(line);
        }
        want.reverse();
        assert_eq!(lines_backwards(content.as_bytes()), want);
    }
}
