//! How usage is stored: as engine counters ([`super::engine::Write::Add`]), bytes then objects,
//! so that commits add to them without reading them. The commit rules, the coordination rules
//! and the reads all encode and decode it here.

use super::Usage;

pub(super) fn usage_of(v: Option<&[u8]>) -> Usage {
    let [bytes, objects] = super::engine::counters(v);
    Usage {
        bytes: bytes.max(0) as u64,
        objects: objects.max(0) as u64,
    }
}

pub(super) fn usage_bytes(u: Usage) -> Vec<u8> {
    super::engine::counters_value([u.bytes as i64, u.objects as i64])
}
