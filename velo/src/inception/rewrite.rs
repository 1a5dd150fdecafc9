//! `--physical-paths`: canonical paths in a command's output become physical again.
//!
//! Under projection, rustc reports `/vrift_workspace/src/main.rs:3:5`, which no editor on this
//! machine can open. The seed proposed `--remap-path-prefix` in `RUSTFLAGS`, but `RUSTFLAGS` is
//! hashed into Cargo's fingerprints: a per-machine value there would break the cache sharing the
//! projection exists for. So velo rewrites the stream instead, after the fact, and artifacts keep
//! their canonical paths.
//!
//! The rewrite is byte-oriented (colour escapes and non-UTF-8 output pass through) and matches
//! the canonical root only as a whole path component: not after a name character
//! (`x/vrift_workspace`) and not before one (`/vrift_workspace2`). Output arrives in arbitrary
//! chunks, so a chunk ending in what may be the start of a match is held back until the next
//! chunk (or the end of the stream) decides it: at most the length of the root.

/// Streaming replacement of one path prefix by another.
#[derive(Debug)]
pub struct Rewriter {
    from: Vec<u8>,
    to: Vec<u8>,
    pending: Vec<u8>,
    /// The last byte emitted, for the boundary check before a match; `None` at the start and
    /// right after a terminal escape sequence (colour codes end in a letter but separate words).
    last: Option<u8>,
    escape: Escape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// Just saw ESC.
    Start,
    /// Inside `ESC [ … final`.
    Csi,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

impl Rewriter {
    pub fn new(from: &[u8], to: &[u8]) -> Rewriter {
        assert!(!from.is_empty());
        Rewriter {
            from: from.to_vec(),
            to: to.to_vec(),
            pending: Vec::new(),
            last: None,
            escape: Escape::None,
        }
    }

    /// Rewrites `input`, appending to `out` what can be emitted now.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(input);
        let held = self.scan(&buf, false, out);
        self.pending = buf[held..].to_vec();
    }

    /// Emits whatever was held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let buf = std::mem::take(&mut self.pending);
        let held = self.scan(&buf, true, out);
        debug_assert_eq!(held, buf.len());
    }

    /// Emits `buf` into `out` up to the returned index; the rest must wait for more input.
    fn scan(&mut self, buf: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < buf.len() {
            let rest = &buf[i..];
            let prev_ok = !self.last.is_some_and(is_name_byte);
            if prev_ok && rest.starts_with(&self.from) {
                match rest.get(self.from.len()) {
                    None if !at_end => return i,
                    Some(&next) if is_name_byte(next) => {}
                    _ => {
                        out.extend_from_slice(&self.to);
                        i += self.from.len();
                        self.last = self.from.last().copied();
                        continue;
                    }
                }
            } else if prev_ok
                && !at_end
                && rest.len() < self.from.len()
                && self.from.starts_with(rest)
            {
                return i;
            }
            out.push(buf[i]);
            self.emitted(buf[i]);
            i += 1;
        }
        buf.len()
    }

    fn emitted(&mut self, b: u8) {
        (self.escape, self.last) = match (self.escape, b) {
            (Escape::None, 0x1b) => (Escape::Start, None),
            (Escape::None, b) => (Escape::None, Some(b)),
            (Escape::Start, b'[') => (Escape::Csi, None),
            (Escape::Start, _) => (Escape::None, None),
            (Escape::Csi, 0x40..=0x7e) => (Escape::None, None),
            (Escape::Csi, _) => (Escape::Csi, None),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = Rewriter::new(b"/vrift_workspace", b"/home/alice/proj");
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            r.feed(part, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn rewrites_whole_components_whatever_the_chunking() {
        let input =
            b"error: x\n  --> /vrift_workspace/src/main.rs:3:5\n\x1b[1m/vrift_workspace\x1b[0m \
/vrift_workspace2 a/vrift_workspace /vrift_workspace:1 (/vrift_workspace)\n/vrift_workspace";
        let want =
            b"error: x\n  --> /home/alice/proj/src/main.rs:3:5\n\x1b[1m/home/alice/proj\x1b[0m \
/vrift_workspace2 a/vrift_workspace /home/alice/proj:1 (/home/alice/proj)\n/home/alice/proj";
        for chunk in 1..=input.len() {
            assert_eq!(
                String::from_utf8_lossy(&rewrite_in_chunks(input, chunk)),
                String::from_utf8_lossy(want),
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn a_partial_match_at_the_end_is_emitted_unchanged() {
        assert_eq!(rewrite_in_chunks(b"see /vrift_work", 3), b"see /vrift_work");
        assert_eq!(
            rewrite_in_chunks(b"\xff\xfe/vrift_workspace/\xff", 2),
            b"\xff\xfe/home/alice/proj/\xff"
        );
    }
}
