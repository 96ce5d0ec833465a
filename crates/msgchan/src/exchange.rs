//! The exchange test both ends run (a Linux VM with `qmsg exchange`, a bare-metal VM with the
//! test guest's `msgchan` mode): each side sends `count` messages and receives as many, every
//! one checked. Message `i` from peer `p` is [`message`]`(p, i)`: its number, then a pattern;
//! lengths vary from 4 to [`MAX_TEST_MESSAGE`] bytes so that records wrap the ring at every
//! offset.

/// The longest test message.
pub const MAX_TEST_MESSAGE: usize = 251;

/// Writes message `i` from peer `from` into `buf` (at least [`MAX_TEST_MESSAGE`] bytes);
/// returns its length.
pub fn message(from: usize, i: u32, buf: &mut [u8]) -> usize {
    let len = 4 + (i as usize).wrapping_mul(13) % (MAX_TEST_MESSAGE - 3);
    buf[..4].copy_from_slice(&i.to_le_bytes());
    for (j, b) in buf[4..len].iter_mut().enumerate() {
        *b = (i as usize)
            .wrapping_mul(31)
            .wrapping_add(j)
            .wrapping_add(from * 0x55) as u8;
    }
    len
}

/// Why received message `i` from peer `from` is not what was sent, if it is not.
pub fn check(from: usize, i: u32, got: &[u8]) -> Result<(), Mismatch> {
    let mut want = [0u8; MAX_TEST_MESSAGE];
    let len = message(from, i, &mut want);
    if got.len() != len {
        return Err(Mismatch::Length {
            got: got.len(),
            want: len,
        });
    }
    match got.iter().zip(&want[..len]).position(|(a, b)| a != b) {
        Some(at) => Err(Mismatch::Byte {
            at,
            got: got[at],
            want: want[at],
        }),
        None => Ok(()),
    }
}

/// How a received test message differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Length { got: usize, want: usize },
    Byte { at: usize, got: u8, want: u8 },
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Mismatch::Length { got, want } => write!(f, "{got} bytes, expected {want}"),
            Mismatch::Byte { at, got, want } => {
                write!(f, "byte {at} is {got:#04x}, expected {want:#04x}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_check_and_vary() {
        let mut buf = [0u8; MAX_TEST_MESSAGE];
        let mut lens = [false; MAX_TEST_MESSAGE + 1];
        for i in 0..1000 {
            let len = message(1, i, &mut buf);
            lens[len] = true;
            assert_eq!(check(1, i, &buf[..len]), Ok(()));
            assert!(
                check(0, i, &buf[..len]).is_err() || len == 4,
                "peers differ"
            );
            assert!(check(1, i + 1, &buf[..len]).is_err(), "numbers differ");
        }
        assert!(lens[4] && lens[MAX_TEST_MESSAGE]);
        let len = message(0, 7, &mut buf);
        buf[len - 1] ^= 1;
        assert!(matches!(
            check(0, 7, &buf[..len]),
            Err(Mismatch::Byte { .. })
        ));
        assert_eq!(
            check(0, 7, &buf[..len - 1]),
            Err(Mismatch::Length {
                got: len - 1,
                want: len
            })
        );
    }
}
