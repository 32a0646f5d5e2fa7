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
    // front), and copies exactly `len` bytes otherwise. A reused buffer larger than the view is
    // copied once more rather than shrunk: shrinking in place (`into_boxed_slice` reallocating
    // down) keeps the front of the old buffer and frees its tail, so every stored value would
    // leave a hole a little smaller than the next read buffer, which the allocator never reuses
    // (measured: an 8 KiB hole per 64-byte value through the HTTP API, 4.5 KB of resident memory
    // per key).
    let v = Vec::from(value);
    if v.capacity() == v.len() {
        v.into_boxed_slice()
    } else {
        Box::from(v.as_slice())
    }
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
        // The sole owner of a larger buffer (an HTTP read buffer the server let go of): copied
        // into a buffer of its own, the larger one freed whole.
        let mut read = bytes::BytesMut::with_capacity(8192);
        read.extend_from_slice(&[3u8; 64]);
        let body = read.freeze();
        let range = body.as_ptr_range();
        let kept = owned_slice(body);
        assert_eq!(&kept[..], &[3u8; 64][..]);
        assert!(!(range.start..range.start.wrapping_add(8192)).contains(&kept.as_ptr()));
    }
}
