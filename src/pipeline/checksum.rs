//! Which checksums a request asks for, computing them while the body streams, and comparing
//! them with what the client declared (in headers, or in an aws-chunked trailer).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;

use super::PipelineError;
use crate::meta::Checksums;

/// The checksum algorithms S3 defines, by their header suffix.
pub const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "sha1", "sha256", "crc64nvme"];

fn slot<'a>(c: &'a mut Checksums, alg: &str) -> Option<&'a mut Option<String>> {
    Some(match alg {
        "crc32" => &mut c.crc32,
        "crc32c" => &mut c.crc32c,
        "sha1" => &mut c.sha1,
        "sha256" => &mut c.sha256,
        "crc64nvme" => &mut c.crc64nvme,
        _ => return None,
    })
}

pub fn get<'a>(c: &'a Checksums, alg: &str) -> Option<&'a str> {
    match alg {
        "crc32" => c.crc32.as_deref(),
        "crc32c" => c.crc32c.as_deref(),
        "sha1" => c.sha1.as_deref(),
        "sha256" => c.sha256.as_deref(),
        "crc64nvme" => c.crc64nvme.as_deref(),
        _ => None,
    }
}

/// What a request declared: values from `x-amz-checksum-*` headers, the algorithm it asked for
/// (`x-amz-sdk-checksum-algorithm` / `x-amz-checksum-algorithm`) and the trailer it announced.
#[derive(Debug, Default, Clone)]
pub struct Declared {
    pub values: Checksums,
    /// Algorithms whose value is computed and stored even though no value was sent.
    pub algorithms: Vec<String>,
    pub md5: Option<[u8; 16]>,
}

impl Declared {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, PipelineError> {
        let mut d = Declared::default();
        for alg in ALGORITHMS {
            if let Some(v) = headers.get(format!("x-amz-checksum-{alg}")) {
                let v = v
                    .to_str()
                    .map_err(|_| PipelineError::InvalidChecksum(alg.into()))?;
                *slot(&mut d.values, alg).expect("known") = Some(v.to_string());
            }
        }
        for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                d.want(&v.to_ascii_lowercase())?;
            }
        }
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            for name in t.split(',').map(str::trim) {
                if let Some(alg) = name.to_ascii_lowercase().strip_prefix("x-amz-checksum-") {
                    d.want(alg)?;
                }
            }
        }
        if let Some(v) = headers.get("content-md5") {
            let raw = v
                .to_str()
                .ok()
                .and_then(|s| B64.decode(s.trim()).ok())
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or(PipelineError::InvalidDigest)?;
            d.md5 = Some(raw);
        }
        Ok(d)
    }

    pub fn want(&mut self, alg: &str) -> Result<(), PipelineError> {
        if !ALGORITHMS.contains(&alg) {
            return Err(PipelineError::UnsupportedChecksum(alg.to_string()));
        }
        if !self.algorithms.iter().any(|a| a == alg) {
            self.algorithms.push(alg.to_string());
        }
        Ok(())
    }

    pub fn hasher(&self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        let on = |alg: &str| {
            self.algorithms.iter().any(|a| a == alg) || get(&self.values, alg).is_some()
        };
        if on("crc32") {
            h.crc32 = Some(s3s::crypto::Crc32::new());
        }
        if on("crc32c") {
            h.crc32c = Some(s3s::crypto::Crc32c::new());
        }
        if on("sha1") {
            h.sha1 = Some(s3s::crypto::Sha1::new());
        }
        if on("sha256") {
            h.sha256 = Some(s3s::crypto::Sha256::new());
        }
        if on("crc64nvme") {
            h.crc64nvme = Some(s3s::crypto::Crc64Nvme::new());
        }
        h
    }

    /// Adds the checksum values that arrived in an aws-chunked trailer.
    pub fn add_trailers(&mut self, trailers: &HeaderMap) -> Result<(), PipelineError> {
        for alg in ALGORITHMS {
            if let Some(v) = trailers.get(format!("x-amz-checksum-{alg}")) {
                let v = v
                    .to_str()
                    .map_err(|_| PipelineError::InvalidChecksum(alg.into()))?;
                *slot(&mut self.values, alg).expect("known") = Some(v.to_string());
            }
        }
        Ok(())
    }

    /// Compares what was declared with what was computed over the bytes received.
    pub fn verify(&self, md5: &[u8; 16], computed: &Checksums) -> Result<(), PipelineError> {
        if let Some(expected) = &self.md5
            && expected != md5
        {
            return Err(PipelineError::BadDigest("Content-MD5".into()));
        }
        for alg in ALGORITHMS {
            if let Some(expected) = get(&self.values, alg)
                && Some(expected) != get(computed, alg)
            {
                return Err(PipelineError::BadDigest(alg.to_ascii_uppercase()));
            }
        }
        Ok(())
    }
}

pub fn from_s3s(c: s3s::dto::Checksum) -> Checksums {
    Checksums {
        crc32: c.checksum_crc32,
        crc32c: c.checksum_crc32c,
        sha1: c.checksum_sha1,
        sha256: c.checksum_sha256,
        crc64nvme: c.checksum_crc64nvme,
        kind: None,
    }
}

/// The composite checksum S3 reports for a multipart object: the checksum of the concatenated
/// raw part checksums, suffixed with the part count.
pub fn composite(alg: &str, parts: &[&str]) -> Option<String> {
    let mut raw = Vec::new();
    for p in parts {
        raw.extend(B64.decode(p).ok()?);
    }
    let digest: Vec<u8> = match alg {
        "crc32" => s3s::crypto::Crc32::checksum(&raw).as_ref().to_vec(),
        "crc32c" => s3s::crypto::Crc32c::checksum(&raw).as_ref().to_vec(),
        "sha1" => s3s::crypto::Sha1::checksum(&raw).as_ref().to_vec(),
        "sha256" => s3s::crypto::Sha256::checksum(&raw).as_ref().to_vec(),
        _ => return None,
    };
    Some(format!("{}-{}", B64.encode(digest), parts.len()))
}

pub fn set(c: &mut Checksums, alg: &str, value: String) {
    if let Some(s) = slot(c, alg) {
        *s = Some(value);
    }
}

/// The full-object checksum of a multipart object (`x-amz-checksum-type: FULL_OBJECT`): the
/// parts' CRCs combined as if the whole body had been hashed at once. Only the CRC algorithms
/// can be combined; `parts` are (base64 CRC, part length).
pub fn combined(alg: &str, parts: &[(&str, u64)]) -> Option<String> {
    use crc_fast::CrcAlgorithm;
    let (algorithm, width) = match alg {
        "crc32" => (CrcAlgorithm::Crc32IsoHdlc, 4),
        "crc32c" => (CrcAlgorithm::Crc32Iscsi, 4),
        "crc64nvme" => (CrcAlgorithm::Crc64Nvme, 8),
        _ => return None,
    };
    let mut acc: Option<u64> = None;
    for (value, len) in parts {
        let raw = B64.decode(value).ok()?;
        if raw.len() != width {
            return None;
        }
        let crc = raw.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
        acc = Some(match acc {
            None => crc,
            Some(prev) => crc_fast::checksum_combine(algorithm, prev, crc, *len),
        });
    }
    let v = acc?;
    Some(B64.encode(&v.to_be_bytes()[8 - width..]))
}

/// A checksum of the whole object declared on CompleteMultipartUpload, against the one the
/// parts compose (`computed`): S3 refuses an algorithm the upload was not created with
/// (`InvalidRequest`) and a value that differs (`BadDigest`), and stores nothing. A composite
/// value is compared without its `-N` part count, which clients may leave out.
pub fn check_declared_whole(
    computed: &Checksums,
    upload_algorithm: Option<&str>,
    declared: [(&str, Option<&str>); 5],
) -> s3s::S3Result<()> {
    let bare = |v: &str| v.split('-').next().unwrap_or_default().to_string();
    for (alg, value) in declared {
        let Some(value) = value else { continue };
        if upload_algorithm != Some(alg) {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "The upload was created using the {} checksum algorithm; the complete request named {alg}.",
                upload_algorithm.unwrap_or("no")
            ));
        }
        if get(computed, alg).map(bare) != Some(bare(value)) {
            return Err(s3s::s3_error!(
                BadDigest,
                "The {alg} you specified did not match the calculated checksum."
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_crcs_equal_the_crc_of_the_whole_body() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = body.split_at(60_000);
        let crc32 = |d: &[u8]| B64.encode(s3s::crypto::Crc32::checksum(d));
        let (pa, pb) = (crc32(a), crc32(b));
        let whole = combined("crc32", &[(&pa, a.len() as u64), (&pb, b.len() as u64)]);
        assert_eq!(whole, Some(crc32(&body)));
        let nvme = |d: &[u8]| B64.encode(s3s::crypto::Crc64Nvme::checksum(d));
        let (na, nb) = (nvme(a), nvme(b));
        assert_eq!(
            combined("crc64nvme", &[(&na, 60_000), (&nb, 40_000)]),
            Some(nvme(&body))
        );
        assert_eq!(combined("sha256", &[(&pa, 1)]), None);
    }
}
