//! Route updates as they wait in the subscribers' queues.
//!
//! A gateway's resync or departure publishes its keys to every worker at once, and until the
//! slowest worker has read them they sit in its queue. As protobuf structs that is a
//! `RouteEntry` of 48 bytes plus an allocation for its key, per entry: a table of a million keys
//! left about 70 MB of small freed blocks behind in the allocator after every load
//! (docs/scaling.md). Packed, the keys of a chunk share one buffer and each entry takes 16 bytes
//! beside it, in two allocations per chunk; a stream turns a chunk back into a `RouteUpdate` only
//! while it encodes it.
//!
//! Entries are grouped into chunks of at most [`UPDATE_CHUNK`] as they are pushed.

use std::sync::Arc;

use gatehouse_proto::v1::{AttachResponse, RouteEntry, RouteUpdate, attach_response};

/// Entries per route update (snapshot chunks and ordinary updates alike): with keys of at most
/// 256 bytes, about 1 MiB, far below the gRPC size limit, whatever a resync or a departure
/// changes at once.
pub(crate) const UPDATE_CHUNK: usize = 4096;

/// One entry beside the chunk's key buffer.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where its key ends in the buffer (it starts where the previous one ends).
    end: u32,
    /// `RouteKind` on the wire (only uid and group are ever held).
    kind: u8,
    present: bool,
    gateway: u64,
}

/// At most [`UPDATE_CHUNK`] entries with their keys in one buffer.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    keys: String,
    slots: Vec<Slot>,
}

impl Chunk {
    /// Entries in the chunk.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the chunk has no entry (an update that only carries flags).
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The entries as the wire has them.
    fn entries(&self) -> Vec<RouteEntry> {
        let mut start = 0;
        let mut entries = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let end = slot.end as usize;
            entries.push(RouteEntry {
                kind: i32::from(slot.kind),
                key: self.keys[start..end].to_owned(),
                gateway: slot.gateway,
                present: slot.present,
            });
            start = end;
        }
        entries
    }
}

/// Entries being grouped into chunks.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    full: Vec<Chunk>,
    current: Chunk,
    total: usize,
}

impl Chunks {
    /// Adds one entry: `gateway` now holds (`present`) or no longer holds `key` of `kind`.
    pub(crate) fn push(&mut self, kind: i32, key: &str, gateway: u64, present: bool) {
        if self.current.len() == UPDATE_CHUNK {
            self.full.push(std::mem::take(&mut self.current));
        }
        self.current.keys.push_str(key);
        // Keys are at most 256 bytes and a chunk holds 4096: the buffer stays far below 4 GiB.
        let end = u32::try_from(self.current.keys.len()).expect("a chunk's keys fit in u32");
        self.current.slots.push(Slot {
            end,
            kind: u8::try_from(kind).unwrap_or(0),
            present,
            gateway,
        });
        self.total += 1;
    }

    /// Entries pushed.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// The chunks, in order; one empty chunk when nothing was pushed (an update or a snapshot
    /// always has at least one message, which carries its flags).
    pub(crate) fn finish(mut self) -> Vec<Chunk> {
        if !self.current.is_empty() || self.full.is_empty() {
            self.full.push(self.current);
        }
        self.full
    }
}

/// A message queued for one member: shared between the queues it was sent to.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// Anything but a route update.
    Message(Arc<AttachResponse>),
    /// A route update, packed.
    Update(Arc<PackedUpdate>),
}

impl Outgoing {
    /// The message as the wire has it (built for the encoder, then dropped).
    pub(crate) fn into_response(self) -> AttachResponse {
        match self {
            Outgoing::Message(message) => Arc::unwrap_or_clone(message),
            Outgoing::Update(update) => update.response(),
        }
    }
}

/// A [`RouteUpdate`] whose entries are a packed [`Chunk`].
#[derive(Debug)]
pub(crate) struct PackedUpdate {
    pub(crate) seq: u64,
    pub(crate) reset: bool,
    pub(crate) authoritative: bool,
    pub(crate) partial: bool,
    pub(crate) chunk: Chunk,
}

impl PackedUpdate {
    fn response(&self) -> AttachResponse {
        AttachResponse {
            msg: Some(attach_response::Msg::RouteUpdate(RouteUpdate {
                seq: self.seq,
                reset: self.reset,
                authoritative: self.authoritative,
                entries: self.chunk.entries(),
                partial: self.partial,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::v1::RouteKind;

    use super::*;

    #[test]
    fn entries_come_back_as_pushed_in_chunks_of_at_most_update_chunk() {
        let mut chunks = Chunks::default();
        for n in 0..UPDATE_CHUNK + 2 {
            let kind = if n % 2 == 0 { RouteKind::Uid } else { RouteKind::Group };
            chunks.push(kind as i32, &format!("key-{n}"), n as u64, n % 3 != 0);
        }
        assert_eq!(chunks.total(), UPDATE_CHUNK + 2);
        let chunks = chunks.finish();
        assert_eq!(chunks.iter().map(Chunk::len).collect::<Vec<_>>(), vec![UPDATE_CHUNK, 2]);
        let entries: Vec<RouteEntry> = chunks.iter().flat_map(Chunk::entries).collect();
        for (n, entry) in entries.iter().enumerate() {
            let kind = if n % 2 == 0 { RouteKind::Uid } else { RouteKind::Group };
            assert_eq!(entry.kind, kind as i32);
            assert_eq!(entry.key, format!("key-{n}"));
            assert_eq!((entry.gateway, entry.present), (n as u64, n % 3 != 0));
        }
    }

    #[test]
    fn nothing_pushed_gives_one_empty_chunk_and_an_empty_key_survives() {
        let nothing = Chunks::default().finish();
        assert_eq!(nothing.len(), 1);
        assert!(nothing[0].is_empty());
        let mut chunks = Chunks::default();
        chunks.push(RouteKind::Uid as i32, "", 1, true);
        chunks.push(RouteKind::Uid as i32, "b", 1, true);
        let keys: Vec<String> = chunks.finish()[0].entries().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["".to_owned(), "b".to_owned()]);
    }
}
