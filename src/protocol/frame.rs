//! The size prefix in front of every request: checked against the limit
//! before a single byte of body is allocated.

/// What a 4-byte size prefix says about the frame behind it.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameSize {
    Ok(usize),
    Negative(i32),
    TooLarge { claimed: usize, max: usize },
}

pub fn check_size(prefix: [u8; 4], request_bytes_max: usize) -> FrameSize {
    let claimed = i32::from_be_bytes(prefix);
    if claimed < 0 {
        return FrameSize::Negative(claimed);
    }
    let claimed = claimed as usize;
    if claimed > request_bytes_max {
        return FrameSize::TooLarge {
            claimed,
            max: request_bytes_max,
        };
    }
    FrameSize::Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_huge_sizes_are_refused_before_allocation() {
        assert_eq!(
            check_size((-1i32).to_be_bytes(), 100),
            FrameSize::Negative(-1)
        );
        assert_eq!(
            check_size(i32::MAX.to_be_bytes(), 100),
            FrameSize::TooLarge {
                claimed: i32::MAX as usize,
                max: 100
            }
        );
        assert_eq!(check_size(100i32.to_be_bytes(), 100), FrameSize::Ok(100));
    }
}
