//! Bounded writes into fixed buffers. The hooks build paths in stack and static buffers; an
//! index past a buffer's end would panic, and a panic in a hook aborts the user's program. So
//! `clippy::indexing_slicing` is denied crate-wide and the bounds are checked here, once: each
//! write says `None` when it does not fit, and the hook passes the call through or fails with
//! `ENAMETOOLONG`.

/// Copies `src` to `buf[at..]`; returns where it ends, or `None` if it does not fit.
#[inline]
pub fn put(buf: &mut [u8], at: usize, src: &[u8]) -> Option<usize> {
    let end = at.checked_add(src.len())?;
    buf.get_mut(at..end)?.copy_from_slice(src);
    Some(end)
}

/// Sets `buf[at]`; `None` past the end.
#[inline]
pub fn set(buf: &mut [u8], at: usize, byte: u8) -> Option<()> {
    *buf.get_mut(at)? = byte;
    Some(())
}

/// `parts` one after another from `buf[at]` on, then a NUL; returns where the NUL is, or `None`
/// if they and the NUL do not fit.
#[inline]
pub fn put_c(buf: &mut [u8], mut at: usize, parts: &[&[u8]]) -> Option<usize> {
    for part in parts {
        at = put(buf, at, part)?;
    }
    set(buf, at, 0)?;
    Some(at)
}

/// `parts` one after another from the start of `buf`, then a NUL; returns the bytes before the
/// NUL, or `None` if they and the NUL do not fit.
#[inline]
pub fn c_join<'b>(buf: &'b mut [u8], parts: &[&[u8]]) -> Option<&'b [u8]> {
    let end = put_c(buf, 0, parts)?;
    buf.get(..end)
}

/// The first `n` bytes of `buf`, where `n` is what a call wrote into it (never more than its
/// length; all of `buf` if it were).
#[inline]
pub fn head(buf: &[u8], n: usize) -> &[u8] {
    buf.get(..n).unwrap_or(buf)
}

/// `buf` from `n` on; empty past the end.
#[inline]
pub fn tail(buf: &[u8], n: usize) -> &[u8] {
    buf.get(n..).unwrap_or_default()
}

/// The lowercase hex digit of `n`'s low four bits.
#[inline]
pub fn hex_digit(n: u8) -> u8 {
    match n & 15 {
        d @ 0..10 => b'0' + d,
        d => b'a' + d - 10,
    }
}

/// `n` in `radix` (10 or 16) digits, lowercase, into the end of `buf`: the digits.
#[inline]
pub fn digits(mut n: u64, radix: u64, buf: &mut [u8; 20]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = DIGITS.get((n % radix) as usize).copied().unwrap_or(b'?');
        start -= 1;
        n /= radix;
        if n == 0 {
            break;
        }
    }
    tail(buf, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_that_do_not_fit_say_none_and_leave_no_partial_nul() {
        let mut buf = [0xffu8; 6];
        assert_eq!(c_join(&mut buf, &[b"ab", b"/", b"c"]), Some(&b"ab/c"[..]));
        assert_eq!(buf.get(4), Some(&0));
        assert_eq!(c_join(&mut buf, &[b"abc", b"def"]), None);
        assert_eq!(put(&mut buf, 5, b"x"), Some(6));
        assert_eq!(put(&mut buf, 6, b"x"), None);
        assert_eq!(put(&mut buf, usize::MAX, b"x"), None);
        assert_eq!(set(&mut buf, 6, 0), None);
        assert_eq!(head(b"abc", 2), b"ab");
        assert_eq!(head(b"abc", 9), b"abc");
        assert_eq!(tail(b"abc", 9), b"");
        let mut d = [0; 20];
        assert_eq!(digits(0, 10, &mut d), b"0");
        assert_eq!(digits(u64::MAX, 10, &mut d), b"18446744073709551615");
        assert_eq!(digits(0x7f00_beef, 16, &mut d), b"7f00beef");
    }
}
