//! The stages of a write, and their order (DESIGN.md §2, §9).

mod digest;
mod meter;
mod scan;
mod sniff;

use std::sync::Arc;

use super::checksum::Declared;
use super::quota::Room;
use super::stage::Stage;
use crate::backend::Backends;
use crate::scanner::Scanner;

/// The stages of one write, in protocol order: a body of unknown length is metered first (its
/// limits and quota before anything else sees a chunk); the type is judged on the first bytes
/// before anything is stored; the scan's verdict comes before the digests.
pub fn for_write(
    backend: &Arc<Backends>,
    declared: &Declared,
    own_md5: bool,
    sniff: bool,
    scanner: Option<&Arc<Scanner>>,
    room: Option<Room>,
) -> Vec<Box<dyn Stage>> {
    let mut stages: Vec<Box<dyn Stage>> = Vec::with_capacity(4);
    if let Some(room) = room {
        stages.push(Box::new(meter::Meter::new(room)));
    }
    if sniff {
        stages.push(Box::new(sniff::Sniff::default()));
    }
    if let Some(s) = scanner {
        stages.push(Box::new(scan::Scan::new(backend.clone(), s.clone())));
    }
    stages.push(Box::new(digest::Digest::new(
        backend.clone(),
        declared,
        own_md5,
    )));
    stages
}
