//! Key encoding for every tree, in one place (no other module sees it).
//!
//! Tenant ids and bucket names are short (≤ 63 bytes) and are length-prefixed, so the object key
//! that follows can be any byte sequence (including `/`, NUL and `../`) and keys of one bucket sort
//! in S3's UTF-8 binary order under one prefix — listing is a range scan.

/// Length of a ULID in its canonical text form; upload ids and blob ids are ULIDs.
pub const ULID_LEN: usize = 26;

fn push_short(out: &mut Vec<u8>, s: &str) {
    debug_assert!(
        s.len() <= u8::MAX as usize,
        "validated before reaching meta"
    );
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// `[len]tenant` — prefix of all of one tenant's buckets in the `buckets` tree.
pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + tenant.len());
    push_short(&mut out, tenant);
    out
}

/// `[len]tenant \0uploads` — in the `usage` tree: the tenant's open multipart uploads and their
/// parts, two counters changed only by commutative additions in the commits that create,
/// complete and abort uploads and record parts. No bucket name starts with NUL, so this never
/// meets a bucket's usage key.
pub fn open_uploads(tenant: &str) -> Vec<u8> {
    let mut out = tenant_prefix(tenant);
    out.extend_from_slice(b"\0uploads");
    out
}

/// `[len]tenant bucket` — key of a bucket record.
pub fn bucket(tenant: &str, bucket: &str) -> Vec<u8> {
    let mut out = tenant_prefix(tenant);
    out.extend_from_slice(bucket.as_bytes());
    out
}

/// `[len]tenant [len]bucket` — prefix of every object and upload of a bucket.
pub fn bucket_prefix(tenant: &str, bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + tenant.len() + bucket.len());
    push_short(&mut out, tenant);
    push_short(&mut out, bucket);
    out
}

/// Key of an object in the `objects` tree.
pub fn object(tenant: &str, bucket: &str, key: &str) -> Vec<u8> {
    let mut out = bucket_prefix(tenant, bucket);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Key of an upload in the `uploads` tree: object key, NUL, upload id. The upload id has a fixed
/// length, so it is parsed from the end even when the object key contains NUL.
pub fn upload(tenant: &str, bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut out = object(tenant, bucket, key);
    out.push(0);
    out.extend_from_slice(upload_id.as_bytes());
    out
}

/// Key of a part: upload id then the big-endian part number, so parts scan in order.
pub fn part(upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(upload_id.len() + 4);
    out.extend_from_slice(upload_id.as_bytes());
    out.extend_from_slice(&part_number.to_be_bytes());
    out
}

/// The smallest byte string greater than every string that starts with `prefix`.
/// Object keys are UTF-8, which never contains 0xFF, so appending it skips a whole prefix.
pub fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.push(0xFF);
    out
}

/// Splits a key that starts with a bucket prefix into (tenant, bucket).
pub fn split_bucket_prefix(k: &[u8]) -> Option<(String, String)> {
    let tl = *k.first()? as usize;
    let tenant = k.get(1..1 + tl)?;
    let bl = *k.get(1 + tl)? as usize;
    let bucket = k.get(2 + tl..2 + tl + bl)?;
    Some((
        String::from_utf8(tenant.to_vec()).ok()?,
        String::from_utf8(bucket.to_vec()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_of_two_tenants_never_share_a_prefix() {
        // "ab" + bucket "c" must not collide with "a" + bucket "bc".
        assert_ne!(bucket_prefix("ab", "c"), bucket_prefix("a", "bc"));
        assert!(!object("a", "bc", "x").starts_with(&bucket_prefix("ab", "c")));
    }

    #[test]
    fn parts_sort_numerically() {
        assert!(part("u", 2) < part("u", 10));
    }
}
