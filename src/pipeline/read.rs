//! The read path: whether the current version of a key may be read under a request's
//! conditions, and which of its bytes — for GET, HEAD, copy sources (CopyObject,
//! UploadPartCopy) and the scan worker. `open` decides it once; [`Opened::body`] streams the bytes from the
//! object's segments ([`super::read`]). What a refusal means to a client is mapped in
//! `error.rs`, with the other errors.

use std::ops::Range;
use std::sync::Arc;

use s3s::dto::{ETag, ETagCondition, Timestamp};

use crate::backend::{Backends, ByteStream};
use crate::meta::{Meta, MetaError, Object, ScanStatus};

/// The conditional headers of a read, or of a copy source (`x-amz-copy-source-if-*`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_unmodified_since: Option<&'a Timestamp>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
}

/// Who reads, which decides what may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// GET: the bytes; refused for a version not known clean.
    Get,
    /// HEAD: the record only, whatever its scan verdict (the verdict is in its headers).
    Head,
    /// A copy source: its bytes go into another object, so it must be readable, and an
    /// `if-none-match` / `if-modified-since` that holds is a failed precondition, not a 304.
    CopySource,
    /// The scan worker: the bytes of a version whatever its verdict (it is there to give one).
    Scan,
}

/// What a request asks to read.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub reader: Reader,
    pub version_id: Option<&'a str>,
    pub conditions: Conditions<'a>,
    pub range: Option<&'a s3s::dto::Range>,
    pub part_number: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such version")]
    NoSuchVersion,
    /// GET/HEAD whose `if-none-match` / `if-modified-since` holds: 304, with the validators.
    #[error("not modified")]
    NotModified(Box<Object>),
    #[error("a precondition failed")]
    PreconditionFailed,
    #[error("both a range and a part number")]
    RangeAndPart,
    #[error("the range is not satisfiable")]
    InvalidRange,
    #[error("the part number is not satisfiable")]
    InvalidPartNumber,
    #[error("the scanner found {0}")]
    Infected(String),
    #[error("not scanned yet")]
    ScanPending,
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// A version that may be read, and the bytes asked for.
#[derive(Debug)]
pub struct Opened {
    pub object: Object,
    pub range: Range<u64>,
    /// A part of the object (`Content-Range` is sent).
    pub partial: bool,
}

impl Opened {
    /// Whether the whole object is read (its checksums then describe the bytes sent).
    pub fn whole(&self) -> bool {
        self.range == (0..self.object.size)
    }

    /// The bytes asked for, streamed from the object's segments.
    pub fn body(&self, backends: &Arc<Backends>) -> ByteStream {
        let segments: Vec<_> = self.object.segments().cloned().collect();
        super::read(backends, &segments, self.range.clone())
    }
}

/// The current version of `key`, if `ask` may read it, and the bytes it selects.
pub async fn open(
    meta: &Meta,
    tenant: &str,
    bucket: &str,
    key: &str,
    ask: &Ask<'_>,
) -> Result<Opened, ReadError> {
    if !matches!(ask.version_id, None | Some("null")) {
        return Err(ReadError::NoSuchVersion);
    }
    meta.require_bucket(tenant, bucket).await?;
    let o = meta
        .object(tenant, bucket, key)
        .await?
        .ok_or(MetaError::NoSuchKey)?;
    if ask.reader == Reader::CopySource {
        // A copy must not launder what a read would refuse.
        readable(&o)?;
    }
    match evaluate(&o, &ask.conditions) {
        Verdict::Ok => {}
        Verdict::NotModified if ask.reader != Reader::CopySource => {
            return Err(ReadError::NotModified(Box::new(o)));
        }
        Verdict::NotModified | Verdict::Failed => return Err(ReadError::PreconditionFailed),
    }
    let (range, partial) = select(&o, ask.range, ask.part_number)?;
    if ask.reader == Reader::Get {
        readable(&o)?;
    }
    Ok(Opened {
        object: o,
        range,
        partial,
    })
}

/// Reads of a version that is not (yet) known clean are refused: only the verdict is visible.
fn readable(o: &Object) -> Result<(), ReadError> {
    match o.scan_status() {
        s if s.readable() => Ok(()),
        ScanStatus::Infected => Err(ReadError::Infected(
            o.scan
                .as_ref()
                .and_then(|s| s.signature.clone())
                .unwrap_or_default(),
        )),
        _ => Err(ReadError::ScanPending),
    }
}

/// Outcome of the conditional headers against the current version.
enum Verdict {
    Ok,
    NotModified,
    Failed,
}

/// RFC 7232 / S3 evaluation order: If-Match, then If-Unmodified-Since (ignored when If-Match is
/// present), If-None-Match, then If-Modified-Since (ignored when If-None-Match is present).
/// Times compare at the one-second resolution of HTTP dates.
fn evaluate(o: &Object, c: &Conditions<'_>) -> Verdict {
    let etag = ETag::Strong(o.etag.clone());
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => etag.weak_cmp(e),
    };
    let secs = o.last_modified_ms.div_euclid(1000);
    let secs_of = |t: &Timestamp| {
        let t: time::OffsetDateTime = t.clone().into();
        t.unix_timestamp()
    };
    if let Some(m) = c.if_match {
        if !matches(m) {
            return Verdict::Failed;
        }
    } else if let Some(t) = c.if_unmodified_since
        && secs > secs_of(t)
    {
        return Verdict::Failed;
    }
    if let Some(m) = c.if_none_match {
        if matches(m) {
            return Verdict::NotModified;
        }
    } else if let Some(t) = c.if_modified_since
        && secs <= secs_of(t)
    {
        return Verdict::NotModified;
    }
    Verdict::Ok
}

/// The byte range a read selects: all, a `Range`, or one part (`partNumber`); and whether it
/// is a part of the object.
fn select(
    o: &Object,
    range: Option<&s3s::dto::Range>,
    part_number: Option<i32>,
) -> Result<(Range<u64>, bool), ReadError> {
    match (range, part_number) {
        (Some(_), Some(_)) => Err(ReadError::RangeAndPart),
        (Some(r), None) => {
            let r = r.check(o.size).map_err(|_| ReadError::InvalidRange)?;
            Ok((r, true))
        }
        (None, Some(n)) => {
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 || n > o.parts.len() {
                return Err(ReadError::InvalidPartNumber);
            }
            let start: u64 = o.parts[..n - 1].iter().map(|p| p.size).sum();
            Ok((start..start + o.parts[n - 1].size, o.parts.len() > 1))
        }
        (None, None) => Ok((0..o.size, false)),
    }
}
