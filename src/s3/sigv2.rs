//! SigV2 presigned URLs (`AWSAccessKeyId`, `Expires`, `Signature` in the query: what the aws CLI
//! v1's `aws s3 presign` and `s3cmd signurl` produce), verified by our own code.
//!
//! The screen decides that a request carries one, and bounds its expiry (at most 7 days ahead,
//! refused after it). The front then builds the [`Claim`] from the request exactly as sent and
//! takes the three parameters off the URI, so s3s sees an unsigned request and never verifies
//! the signature itself (it compares SigV2 signatures with `!=`). `Access` looks up the secret
//! and verifies the claim in constant time. Every `x-amz-*` header present is part of the string
//! to sign, so a header added to a presigned URL breaks its signature — the SigV4 rule for
//! unsigned headers holds by construction.

use hmac::{Hmac, KeyInit, Mac};

/// The query parameters of a SigV2 presigned URL, each exactly once.
pub const PARAMS: [&str; 3] = ["AWSAccessKeyId", "Expires", "Signature"];

/// The sub-resources that are part of the signed resource (AWS's list; sorted, as signed).
const SUBRESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// What a SigV2 presigned request claims: whose key signed it, and over what. Deliberately not
/// `Debug`: the signature never reaches a log.
#[derive(Clone)]
pub struct Claim {
    pub access_key: String,
    signature: String,
    string_to_sign: String,
}

impl Claim {
    /// The claim of `req` (whose query the screen decided carries each of [`PARAMS`] once);
    /// `bucket_from_host` is the bucket a virtual-hosted request names in its `Host`.
    pub fn of<B>(req: &http::Request<B>, bucket_from_host: Option<&str>) -> Claim {
        let query: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let headers = req.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let mut s = String::with_capacity(256);
        for line in [
            req.method().as_str(),
            header("content-md5"),
            header("content-type"),
            &param("Expires"),
        ] {
            s.push_str(line);
            s.push('\n');
        }
        let mut amz: Vec<&str> = headers
            .keys()
            .map(http::HeaderName::as_str)
            .filter(|h| h.starts_with("x-amz-"))
            .collect();
        amz.sort_unstable();
        amz.dedup();
        for name in amz {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("").trim())
                .collect();
            s.push_str(name);
            s.push(':');
            s.push_str(&values.join(","));
            s.push('\n');
        }
        if let Some(b) = bucket_from_host {
            s.push('/');
            s.push_str(b);
        }
        s.push_str(req.uri().path());
        let mut first = true;
        for name in SUBRESOURCES {
            if let Some((_, v)) = query.iter().find(|(k, _)| k == name) {
                s.push(if first { '?' } else { '&' });
                first = false;
                s.push_str(name);
                if !v.is_empty() {
                    s.push('=');
                    s.push_str(v);
                }
            }
        }
        Claim {
            access_key: param("AWSAccessKeyId"),
            signature: param("Signature"),
            string_to_sign: s,
        }
    }

    /// Whether the claim was signed with `secret`: HMAC-SHA1 of the string to sign, compared in
    /// constant time.
    pub fn verify(&self, secret: &str) -> bool {
        use base64::Engine as _;
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else {
            return false;
        };
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(self.string_to_sign.as_bytes());
        mac.verify_slice(&given).is_ok()
    }
}

/// `uri` without the SigV2 parameters; every other parameter is kept exactly as sent.
pub fn strip(uri: &http::Uri) -> http::Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let name = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            !PARAMS.contains(&name.as_str())
        })
        .collect();
    let mut pq = uri.path().to_string();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example of query-string authentication (S3 Developer Guide,
    /// "Authenticating Requests: Using Query Parameters", signature version 2, as first
    /// published: the bucket was later renamed in the text but not in the signature).
    #[test]
    fn the_aws_example_verifies_and_a_changed_request_does_not() {
        let uri = "/johnsmith/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620";
        let req = |method: &str, extra: Option<(&str, &str)>| {
            let mut b = http::Request::builder().method(method).uri(uri);
            if let Some((k, v)) = extra {
                b = b.header(k, v);
            }
            b.body(()).unwrap()
        };
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let claim = Claim::of(&req("GET", None), None);
        assert_eq!(claim.access_key, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(
            claim.string_to_sign,
            "GET\n\n\n1175139620\n/johnsmith/photos/puppy.jpg"
        );
        assert!(claim.verify(secret));
        assert!(!claim.verify("another secret"));
        assert!(!Claim::of(&req("PUT", None), None).verify(secret));
        assert!(!Claim::of(&req("GET", Some(("x-amz-copy-source", "/b/k"))), None).verify(secret));
        // Virtual-hosted: the bucket from the Host comes first in the signed resource.
        let vh = http::Request::builder()
            .uri("/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620")
            .body(())
            .unwrap();
        assert!(Claim::of(&vh, Some("johnsmith")).verify(secret));
    }

    #[test]
    fn stripping_keeps_every_other_parameter_as_sent() {
        let uri: http::Uri =
            "/b/k?partNumber=2&AWSAccessKeyId=AK&uploadId=a%2Bb&Expires=1&Signature=x%3D"
                .parse()
                .unwrap();
        assert_eq!(strip(&uri).to_string(), "/b/k?partNumber=2&uploadId=a%2Bb");
        let only: http::Uri = "/b/k?AWSAccessKeyId=AK&Expires=1&Signature=x"
            .parse()
            .unwrap();
        assert_eq!(strip(&only).to_string(), "/b/k");
    }
}
