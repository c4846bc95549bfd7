//! Listing: ListObjects v1 and v2 and ListObjectVersions, answered from the metadata index with
//! range scans (never by listing the backend).
//!
//! What a page may cost is bounded: it reads at most [`MAX_EXAMINED`] records, and ends
//! truncated (with a correct marker, as S3 may) when that runs out first. With a delimiter,
//! records under a common prefix already returned are passed over in the chunk at hand and the
//! scan then seeks past the prefix; chunk sizes adapt (small after a chunk that ended inside a
//! rolled-up prefix, growing while prefixes are small), so a page of 1000 one-key prefixes reads
//! 1000 records in a few scans, and ten prefixes of a million keys each read a few hundred.
//! Only the records a page returns are decoded.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{Gateway, caller, owner, ts};
use crate::meta::{Cursor, ListedObject};

use crate::pipeline::checksum::{ALGORITHMS, get};

/// Most records one engine scan of a listing reads.
const LIST_CHUNK: usize = 1001;
/// With a delimiter: the first scan's size, and the size after a chunk that ended inside a
/// rolled-up prefix (the next one may be as large); grows fourfold after each chunk that did not.
const FIRST_CHUNK: usize = 64;
const SEEK_CHUNK: usize = 16;
/// Most records one page reads (README, "Limits").
pub(crate) const MAX_EXAMINED: usize = 10_000;

const MAX_KEYS: usize = 1000;

/// One page of a listing.
struct Page {
    objects: Vec<ListedObject>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix returned: where the next page starts.
    last: Option<String>,
}

fn max_keys(n: Option<i32>) -> S3Result<usize> {
    match n {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(MAX_KEYS)),
    }
}

/// `encoding-type=url`: S3 URL-encodes every key and prefix in the answer.
pub(super) struct Enc(bool);

impl Enc {
    pub(super) fn new(e: Option<&EncodingType>) -> S3Result<Self> {
        match e.map(EncodingType::as_str) {
            None => Ok(Self(false)),
            Some("url") => Ok(Self(true)),
            Some(_) => Err(s3_error!(
                InvalidArgument,
                "Invalid Encoding Method specified in Request"
            )),
        }
    }
    pub(super) fn s(&self, s: String) -> String {
        if self.0 {
            form_urlencoded::byte_serialize(s.as_bytes()).collect()
        } else {
            s
        }
    }
    pub(super) fn o(&self, s: Option<String>) -> Option<String> {
        s.map(|s| self.s(s))
    }
}

fn object_entry(e: &Enc, lo: ListedObject, owner: Option<Owner>) -> Object {
    let algs: Vec<ChecksumAlgorithm> = ALGORITHMS
        .iter()
        .filter(|a| get(&lo.object.checksums, a).is_some())
        .map(|a| ChecksumAlgorithm::from(a.to_ascii_uppercase()))
        .collect();
    Object {
        key: Some(e.s(lo.key)),
        e_tag: Some(ETag::Strong(lo.object.etag)),
        last_modified: Some(ts(lo.object.last_modified_ms)),
        size: Some(lo.object.size as i64),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        checksum_algorithm: (!algs.is_empty()).then_some(algs),
        checksum_type: lo.object.checksums.kind.map(ChecksumType::from),
        owner,
        ..Default::default()
    }
}

fn common_prefixes(e: &Enc, p: Vec<String>) -> Vec<CommonPrefix> {
    p.into_iter()
        .map(|p| CommonPrefix {
            prefix: Some(e.s(p)),
        })
        .collect()
}

impl Gateway {
    /// Lists up to `max` keys and common prefixes after `after`.
    async fn page(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> S3Result<Page> {
        self.meta.require_bucket(tenant, bucket).await?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut page = Page {
            objects: Vec::new(),
            prefixes: Vec::new(),
            truncated: false,
            last: None,
        };
        // A marker that is itself a rolled-up prefix resumes after everything under it.
        let rolled_up = |m: &str| {
            delimiter.is_some_and(|d| {
                m.strip_prefix(prefix)
                    .and_then(|rest| rest.find(d).map(|i| i + d.len() == rest.len()))
                    .unwrap_or(false)
            })
        };
        let mut cursor = match after {
            Some(m) if rolled_up(m) => Cursor::Past(m.to_string()),
            Some(m) => Cursor::After(m.to_string()),
            None => Cursor::Start,
        };
        let mut chunk = if delimiter.is_some() {
            FIRST_CHUNK
        } else {
            LIST_CHUNK
        };
        let mut examined = 0;
        // The common prefix returned last: records under it are passed over.
        let mut rolled: Option<String> = None;
        'scan: loop {
            if examined >= MAX_EXAMINED {
                // S3 may end a page early; the marker (the last key or prefix returned) is right
                // whatever was passed over, since everything examined was returned or lies under
                // the last prefix returned.
                page.truncated = true;
                break;
            }
            // One more than the page holds, to know whether it is truncated.
            let want = (max + 1 - page.objects.len() - page.prefixes.len())
                .min(chunk)
                .min(MAX_EXAMINED - examined);
            let records = self
                .meta
                .list_objects(tenant, bucket, prefix, &cursor, want)
                .await?;
            let complete = records.len() < want;
            examined += records.len();
            let mut ended_inside = false;
            for l in records {
                if rolled.as_deref().is_some_and(|cp| l.key.starts_with(cp)) {
                    ended_inside = true;
                    continue;
                }
                ended_inside = false;
                if page.objects.len() + page.prefixes.len() >= max {
                    page.truncated = max > 0;
                    break 'scan;
                }
                if let Some(d) = delimiter
                    && let Some(i) = l.key[prefix.len()..].find(d)
                {
                    let cp = l.key[..prefix.len() + i + d.len()].to_string();
                    cursor = Cursor::Past(cp.clone());
                    page.last = Some(cp.clone());
                    page.prefixes.push(cp.clone());
                    rolled = Some(cp);
                    continue;
                }
                cursor = Cursor::After(l.key.clone());
                page.last = Some(l.key.clone());
                page.objects.push(l.decode()?);
            }
            if complete {
                break;
            }
            if delimiter.is_some() {
                chunk = if ended_inside {
                    SEEK_CHUNK
                } else {
                    (chunk * 4).min(LIST_CHUNK)
                };
            }
        }
        Ok(page)
    }

    pub(super) async fn op_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        let enc = Enc::new(i.encoding_type.as_ref())?;
        let prefix = i.prefix.unwrap_or_default();
        let max = max_keys(i.max_keys)?;
        let page = self
            .page(
                &c.tenant,
                &i.bucket,
                &prefix,
                i.delimiter.as_deref(),
                i.marker.as_deref().filter(|m| !m.is_empty()),
                max,
            )
            .await?;
        let o = owner(&c);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc.s(prefix)),
            marker: Some(enc.s(i.marker.unwrap_or_default())),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_marker: if page.truncated {
                enc.o(page.last)
            } else {
                None
            },
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|lo| object_entry(&enc, lo, Some(o.clone())))
                    .collect(),
            ),
            common_prefixes: Some(common_prefixes(&enc, page.prefixes)),
            delimiter: enc.o(i.delimiter),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    pub(super) async fn op_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let c = caller(&req)?;
        let i = req.input;
        let enc = Enc::new(i.encoding_type.as_ref())?;
        let prefix = i.prefix.unwrap_or_default();
        let max = max_keys(i.max_keys)?;
        let after = match &i.continuation_token {
            Some(t) => Some(
                B64.decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidArgument,
                            "The continuation token provided is incorrect"
                        )
                    })?,
            ),
            None => i.start_after.clone().filter(|s| !s.is_empty()),
        };
        let page = self
            .page(
                &c.tenant,
                &i.bucket,
                &prefix,
                i.delimiter.as_deref(),
                after.as_deref(),
                max,
            )
            .await?;
        let o = i.fetch_owner.unwrap_or(false).then(|| owner(&c));
        let key_count = (page.objects.len() + page.prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc.s(prefix)),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: i.continuation_token,
            start_after: enc.o(i.start_after),
            is_truncated: Some(page.truncated),
            next_continuation_token: if page.truncated {
                page.last.map(|l| B64.encode(l))
            } else {
                None
            },
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|lo| object_entry(&enc, lo, o.clone()))
                    .collect(),
            ),
            common_prefixes: Some(common_prefixes(&enc, page.prefixes)),
            delimiter: enc.o(i.delimiter),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    /// Versioning is not offered yet, so every object is its one version, `null`. This is what
    /// cleanup tools (`rclone purge`, versioned-delete scripts) probe for.
    pub(super) async fn op_list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        let enc = Enc::new(i.encoding_type.as_ref())?;
        let prefix = i.prefix.unwrap_or_default();
        let max = max_keys(i.max_keys)?;
        let page = self
            .page(
                &c.tenant,
                &i.bucket,
                &prefix,
                i.delimiter.as_deref(),
                i.key_marker.as_deref().filter(|m| !m.is_empty()),
                max,
            )
            .await?;
        let o = owner(&c);
        let versions = page
            .objects
            .into_iter()
            .map(|lo| ObjectVersion {
                key: Some(enc.s(lo.key)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                e_tag: Some(ETag::Strong(lo.object.etag)),
                last_modified: Some(ts(lo.object.last_modified_ms)),
                size: Some(lo.object.size as i64),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                owner: Some(o.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(enc.s(prefix)),
            key_marker: Some(enc.s(i.key_marker.unwrap_or_default())),
            version_id_marker: Some(i.version_id_marker.unwrap_or_default()),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: if page.truncated {
                enc.o(page.last)
            } else {
                None
            },
            next_version_id_marker: page.truncated.then(|| "null".to_string()),
            versions: Some(versions),
            common_prefixes: Some(common_prefixes(&enc, page.prefixes)),
            delimiter: enc.o(i.delimiter),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}
