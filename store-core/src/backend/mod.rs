//! Helpers for backend authors, not for users of a store: the argument checks every backend
//! runs first ([`validate`]), the background timer behind `start`/`stop` ([`Periodic`], feature
//! `tokio`), buffers a store may keep ([`owned`]), and the defects the negative controls of
//! the cluster tests inject on purpose ([`fault`], feature `fault-injection`).

pub mod fault;
#[cfg(feature = "tokio")]
mod periodic;
pub mod validate;

use bytes::Bytes;

#[cfg(feature = "tokio")]
pub use periodic::Periodic;

/// `value` as a buffer of its own, exactly its length: what a store that keeps values in memory
/// must hold.
///
/// A caller's `Bytes` may be a view into a much larger buffer (an HTTP server hands out slices
/// of its read buffer), and holding the view keeps all of it alive: a 64-byte value could pin
/// kilobytes. When `value` is the only handle to a buffer of exactly its size, nothing is copied;
/// otherwise its bytes are copied into a new buffer of their length.
///
/// ```
/// use store_core::Bytes;
/// use store_core::backend::owned;
///
/// let big = Bytes::from(vec![7u8; 8192]);
/// let view = big.slice(0..64);
/// drop(big);
/// let kept = owned(view); // 64 bytes of its own; the 8 KiB buffer is freed
/// assert_eq!(kept.len(), 64);
/// ```
pub fn owned(value: Bytes) -> Bytes {
    Bytes::from(owned_slice(value))
}

/// [`owned`] as a plain boxed slice, for a store that keeps small values without a `Bytes`.
pub fn owned_slice(value: Bytes) -> Box<[u8]> {
    // `Vec::from` reuses the buffer when this handle is its only owner (moving the view to the
    // front), and copies exactly `len` bytes otherwise; a reused buffer may be larger than the
    // view, which `into_boxed_slice` gives back.
    Vec::from(value).into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_keeps_the_bytes_and_drops_the_rest() {
        let big = Bytes::from(vec![1u8; 4096]);
        let view = big.slice(100..164);
        let kept = owned(view.clone());
        assert_eq!(kept, view);
        // A copy, not a view: the big buffer's address range does not contain it.
        let range = big.as_ptr_range();
        assert!(!range.contains(&kept.as_ptr()));
        // The sole owner of an exact buffer keeps it without a copy.
        let exact = Bytes::from(vec![2u8; 64]);
        let at = exact.as_ptr();
        assert_eq!(owned(exact).as_ptr(), at);
        assert!(owned(Bytes::new()).is_empty());
    }
}
