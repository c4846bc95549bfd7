//! The screen in front of s3s: refusals that depend only on a request's method, URI and headers,
//! made before s3s verifies the signature or routes the operation. s3s verifies what a signature
//! covers; the screen refuses what a signature must cover but does not, and what Portcullis does
//! not (yet) honour and must not pretend to:
//!
//! - **SigV2** (header `Authorization: AWS …` or a `Signature=` query): it covers neither the body
//!   nor a bounded date (s3s never compares a V2 date with the clock), so a captured request can
//!   be replayed forever with another body. Refused; there is no switch to turn it back on.
//! - **Unsigned `x-amz-*` headers** (SigV4, header or query auth): every one present must be in
//!   `SignedHeaders`, as on AWS, or a presigned upload URL could carry an added
//!   `x-amz-copy-source` and run a copy. Exempt as on S3: `x-amz-content-sha256` (verified
//!   against the body by s3s), `x-amz-date` (part of the signature's scope either way) and
//!   `x-amz-security-token`.
//! - **Credential scope**: only the `s3` service; with `server.require_region`, only the
//!   configured region.
//! - **Presigned lifetime**: `X-Amz-Expires` at most 604 800 s (7 days), as on AWS.
//! - **Server-side encryption** request headers (SSE-S3, SSE-KMS, SSE-C, also on a copy source
//!   and in a presigned query): refused with `NotImplemented` until encryption at rest exists,
//!   so no client believes plaintext is encrypted.

use s3s::{S3Error, S3ErrorCode};

use crate::error::with_status as err;

/// What the screen checks against; from `[server]`.
#[derive(Debug, Clone)]
pub struct ScreenOptions {
    pub region: String,
    /// Refuse SigV4 scopes naming another region (default: accept any).
    pub require_region: bool,
}

/// AWS's bound on a presigned URL's lifetime.
pub const MAX_PRESIGNED_SECS: u64 = 604_800;

/// S3's bound on a write's whole header section (user metadata alone: 2 KB, checked with the
/// attributes).
pub const MAX_WRITE_HEADERS: usize = 8 * 1024;

/// Why `req` must not reach s3s, if it must not.
pub fn screen<B>(req: &http::Request<B>, opts: &ScreenOptions) -> Option<S3Error> {
    let headers = req.headers();
    // Every header of a write may end up in a stored record (upload or object attributes).
    if matches!(*req.method(), http::Method::PUT | http::Method::POST) {
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if size > MAX_WRITE_HEADERS {
            return Some(err(
                S3ErrorCode::RequestHeaderSectionTooLarge,
                http::StatusCode::BAD_REQUEST,
                format!(
                    "Your request header section is {size} bytes; at most {MAX_WRITE_HEADERS} are allowed on a write."
                ),
            ));
        }
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());

    if authorization.is_some_and(|a| a.starts_with("AWS "))
        || (param("Signature").is_some() && param("X-Amz-Signature").is_none())
    {
        return Some(err(
            S3ErrorCode::InvalidRequest,
            http::StatusCode::BAD_REQUEST,
            "SigV2 is not supported; use SigV4 (AWS4-HMAC-SHA256).".into(),
        ));
    }

    // The SigV4 credential scope and signed headers, from the header or the query.
    let (presigned, credential, signed) = if let Some(a) = authorization {
        let Some(rest) = a.strip_prefix("AWS4-HMAC-SHA256") else {
            // Anything else is s3s's to refuse.
            return sse(headers, &query);
        };
        let field = |name: &str| {
            rest.split(',')
                .map(str::trim)
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        (false, field("Credential"), field("SignedHeaders"))
    } else if param("X-Amz-Signature").is_some() {
        if let Some(expires) = param("X-Amz-Expires") {
            match expires.parse::<u64>() {
                Ok(s) if s <= MAX_PRESIGNED_SECS => {}
                _ => {
                    return Some(err(
                        S3ErrorCode::AuthorizationQueryParametersError,
                        http::StatusCode::BAD_REQUEST,
                        format!(
                            "X-Amz-Expires must be a number of seconds of at most {MAX_PRESIGNED_SECS} (7 days)."
                        ),
                    ));
                }
            }
        }
        (
            true,
            param("X-Amz-Credential"),
            param("X-Amz-SignedHeaders"),
        )
    } else {
        // Anonymous: refused later by the access check; no signature to cover anything.
        return sse(headers, &query);
    };
    let malformed = |msg: String| {
        if presigned {
            err(
                S3ErrorCode::AuthorizationQueryParametersError,
                http::StatusCode::BAD_REQUEST,
                msg,
            )
        } else {
            err(
                S3ErrorCode::AuthorizationHeaderMalformed,
                http::StatusCode::BAD_REQUEST,
                msg,
            )
        }
    };

    // Credential = access key / date / region / service / aws4_request.
    if let Some(credential) = credential {
        let parts: Vec<&str> = credential.rsplitn(4, '/').collect();
        if let [_, service, region, _] = parts[..] {
            if service != "s3" {
                return Some(malformed(format!(
                    "The credential scope names the service '{service}'; this endpoint serves only 's3'."
                )));
            }
            if opts.require_region && region != opts.region {
                return Some(malformed(format!(
                    "The authorization header is malformed; the region '{region}' is wrong; expecting '{}'.",
                    opts.region
                )));
            }
        }
    }

    let signed: Vec<String> = signed
        .unwrap_or("")
        .split(';')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let mut unsigned: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|h| h.starts_with("x-amz-"))
        .filter(|h| {
            !matches!(
                *h,
                "x-amz-content-sha256" | "x-amz-date" | "x-amz-security-token"
            )
        })
        .filter(|h| !signed.iter().any(|s| s == h))
        .collect();
    if !unsigned.is_empty() {
        unsigned.sort_unstable();
        return Some(err(
            S3ErrorCode::AccessDenied,
            http::StatusCode::FORBIDDEN,
            format!(
                "There were headers present in the request which were not signed: {}",
                unsigned.join(", ")
            ),
        ));
    }
    sse(headers, &query)
}

/// Refuses every server-side-encryption request header (or presigned query parameter).
fn sse(headers: &http::HeaderMap, query: &[(String, String)]) -> Option<S3Error> {
    let is_sse = |name: &str| {
        let name = name.to_ascii_lowercase();
        name.starts_with("x-amz-server-side-encryption")
            || name.starts_with("x-amz-copy-source-server-side-encryption")
    };
    let named = headers
        .keys()
        .map(http::HeaderName::as_str)
        .find(|h| is_sse(h))
        .map(str::to_string)
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| is_sse(k))
                .map(|(k, _)| k.to_ascii_lowercase())
        })?;
    Some(err(
        S3ErrorCode::NotImplemented,
        http::StatusCode::NOT_IMPLEMENTED,
        format!(
            "Server-side encryption is not supported yet (refused header {named}); nothing was stored."
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(require_region: bool) -> ScreenOptions {
        ScreenOptions {
            region: "us-east-1".into(),
            require_region,
        }
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().method("PUT").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn code(e: Option<S3Error>) -> Option<String> {
        e.map(|e| e.code().as_str().to_string())
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-a, Signature=00";

    #[test]
    fn signed_headers_pass_and_unsigned_ones_are_named() {
        let signed = req(
            "/b/k",
            &[
                ("authorization", AUTH),
                ("x-amz-meta-a", "1"),
                ("x-amz-date", "x"),
            ],
        );
        assert!(screen(&signed, &opts(false)).is_none());
        let e = screen(
            &req(
                "/b/k",
                &[
                    ("authorization", AUTH),
                    ("x-amz-copy-source", "/b/secret"),
                    ("X-Amz-Tagging", "a=b"),
                ],
            ),
            &opts(false),
        )
        .unwrap();
        assert_eq!(e.code(), &S3ErrorCode::AccessDenied);
        assert!(
            e.message()
                .unwrap()
                .ends_with("not signed: x-amz-copy-source, x-amz-tagging"),
            "{e:?}"
        );
    }

    #[test]
    fn presigned_urls_are_bounded_and_cover_their_headers() {
        let q = |expires: &str| {
            format!(
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
            )
        };
        assert!(screen(&req(&q("604800"), &[]), &opts(false)).is_none());
        for bad in ["604801", "31536000", "-1", "x"] {
            assert_eq!(
                code(screen(&req(&q(bad), &[]), &opts(false))).as_deref(),
                Some("AuthorizationQueryParametersError"),
                "{bad}"
            );
        }
        assert_eq!(
            code(screen(
                &req(&q("60"), &[("x-amz-copy-source", "/b/secret")]),
                &opts(false)
            ))
            .as_deref(),
            Some("AccessDenied")
        );
        // S3 lets a presigned request carry its payload hash unsigned.
        assert!(
            screen(
                &req(&q("60"), &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]),
                &opts(false)
            )
            .is_none()
        );
    }

    #[test]
    fn sigv2_in_any_form_is_refused() {
        for r in [
            req("/b/k", &[("authorization", "AWS AK:c2ln")]),
            req(
                "/b/k?AWSAccessKeyId=AK&Expires=4133894400&Signature=c2ln",
                &[],
            ),
        ] {
            let e = screen(&r, &opts(false)).unwrap();
            assert_eq!(e.code(), &S3ErrorCode::InvalidRequest);
            assert!(e.message().unwrap().contains("SigV2 is not supported"));
        }
    }

    #[test]
    fn scope_service_and_optional_region() {
        let with = |scope: &str| {
            req(
                "/b/k",
                &[(
                    "authorization",
                    &format!(
                        "AWS4-HMAC-SHA256 Credential=AK/20260101/{scope}/aws4_request, SignedHeaders=host, Signature=00"
                    ),
                )],
            )
        };
        assert_eq!(
            code(screen(&with("us-east-1/sts"), &opts(false))).as_deref(),
            Some("AuthorizationHeaderMalformed")
        );
        assert!(screen(&with("eu-west-9/s3"), &opts(false)).is_none());
        assert_eq!(
            code(screen(&with("eu-west-9/s3"), &opts(true))).as_deref(),
            Some("AuthorizationHeaderMalformed")
        );
        assert!(screen(&with("us-east-1/s3"), &opts(true)).is_none());
    }

    #[test]
    fn every_sse_header_is_refused_by_name() {
        let auth = |h: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;{h}, Signature=00"
            )
        };
        for h in [
            "x-amz-server-side-encryption",
            "x-amz-server-side-encryption-customer-algorithm",
            "x-amz-server-side-encryption-aws-kms-key-id",
            "x-amz-copy-source-server-side-encryption-customer-key",
        ] {
            let e = screen(
                &req("/b/k", &[("authorization", &auth(h)), (h, "AES256")]),
                &opts(false),
            )
            .unwrap();
            assert_eq!(e.code(), &S3ErrorCode::NotImplemented, "{h}");
            assert!(e.message().unwrap().contains(h), "{e:?}");
        }
        let e = screen(
            &req(
                "/b/k?X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-SignedHeaders=host&x-amz-server-side-encryption=AES256&X-Amz-Signature=00",
                &[],
            ),
            &opts(false),
        )
        .unwrap();
        assert_eq!(e.code(), &S3ErrorCode::NotImplemented);
    }
}
