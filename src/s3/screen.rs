//! The screen in front of s3s: refusals that depend only on a request's method, URI and headers,
//! made before s3s verifies the signature or routes the operation. s3s verifies what a signature
//! covers; the screen refuses what a signature must cover but does not, and what Portcullis does
//! not (yet) honour and must not pretend to.
//!
//! **Which mechanism authenticates a request is decided here, once** ([`decide`]), in exactly
//! the order s3s's verifier applies them (a POST form; SigV2 when a query `Signature` or an
//! `AWS ` header is present; SigV4 query when `X-Amz-Signature` is present; the SigV4 header),
//! and every check below runs on that mechanism. A request that carries markers of two
//! mechanisms is refused (`InvalidArgument`, "Only one auth mechanism allowed", as on S3):
//! otherwise the screen could check one signature while s3s verifies the other (a presigned
//! URL plus any `Authorization` header once skipped the unsigned-header check, the lifetime
//! bound and the service check). The decision travels with the request as an [`AuthMethod`]
//! extension, and `S3Access` refuses a request whose verified credentials disagree with it.
//!
//! - **POST forms** (`multipart/form-data`): refused before a body byte is read, with or without
//!   a signature, until POST uploads go through the write runner (s3s would read the whole form
//!   into memory before verifying its signature).
//! - **SigV2 headers** (`Authorization: AWS …`): they cover neither the body nor a bounded date
//!   (s3s never compares a V2 date with the clock), so a captured request can be replayed
//!   forever with another body. Refused.
//! - **SigV2 presigned URLs** (`AWSAccessKeyId`, `Expires`, `Signature`; what the aws CLI v1 and
//!   `s3cmd signurl` produce): accepted for GET, HEAD and PUT with the bounds of a SigV4 one —
//!   each parameter once, expiring at most 7 days ahead, refused after it — and verified by
//!   our own code (`s3::sigv2`), not by s3s.
//! - **Algorithm**: the header's token and `X-Amz-Algorithm` must be exactly `AWS4-HMAC-SHA256`
//!   (s3s also accepts other spellings, which once walked around this screen).
//! - **Unsigned `x-amz-*` headers** (SigV4, header or query auth): every one present must be in
//!   `SignedHeaders`, as on AWS, or a presigned upload URL could carry an added
//!   `x-amz-copy-source` and run a copy. Exempt as on S3: `x-amz-content-sha256` (verified
//!   against the body by s3s), `x-amz-date` (part of the signature's scope either way) and
//!   `x-amz-security-token`.
//! - **Credential scope**: only the `s3` service; with `server.require_region`, only the
//!   configured region.
//! - **Presigned lifetime**: `X-Amz-Expires` at most 604 800 s (7 days), as on AWS; each of the
//!   six SigV4 query parameters exactly once.
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

/// The one algorithm SigV4 requests may name.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The SigV4 query parameters a presigned URL carries, each exactly once.
const PRESIGNED_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// How a request that passed the screen authenticates: the mechanism s3s will verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No signature at all (refused by `S3Access`, which needs credentials).
    Anonymous,
    /// SigV4 in the `Authorization` header.
    Header,
    /// SigV4 in the query (a presigned URL).
    Presigned,
    /// A SigV2 presigned URL: verified by `Access` from its [`super::sigv2::Claim`].
    PresignedV2,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Header => "sigv4-header",
            Self::Presigned => "sigv4-query",
            Self::PresignedV2 => "sigv2-query",
        }
    }
}

/// The mechanism a request carries, with what its checks need.
enum Signed<'a> {
    Anonymous,
    Header {
        credential: Option<&'a str>,
        signed: Option<&'a str>,
    },
    Presigned {
        credential: &'a str,
        signed: &'a str,
    },
    PresignedV2,
}

fn invalid_argument(msg: &str) -> S3Error {
    err(
        S3ErrorCode::InvalidArgument,
        http::StatusCode::BAD_REQUEST,
        msg.into(),
    )
}

fn query_error(msg: String) -> S3Error {
    err(
        S3ErrorCode::AuthorizationQueryParametersError,
        http::StatusCode::BAD_REQUEST,
        msg,
    )
}

/// Decides which mechanism authenticates the request, in s3s's order, refusing every request
/// on which the screen and s3s could disagree.
fn decide<'a, B>(
    req: &'a http::Request<B>,
    query: &'a [(String, String)],
) -> Result<Signed<'a>, S3Error> {
    let headers = req.headers();
    let count = |name: &str| query.iter().filter(|(k, _)| k == name).count();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // s3s reads a POST whose type is multipart/form-data as a form (before any other
    // mechanism); any `multipart/` type on a POST is taken as one here, a superset.
    let form = *req.method() == http::Method::POST
        && headers.get_all(http::header::CONTENT_TYPE).iter().any(|v| {
            v.as_bytes()
                .trim_ascii_start()
                .get(..10)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"multipart/"))
        });
    let authorizations = headers.get_all(http::header::AUTHORIZATION).iter().count();
    let v2_query = count("Signature") + count("AWSAccessKeyId") > 0;
    let v4_query =
        count("X-Amz-Signature") + count("X-Amz-Credential") + count("X-Amz-Algorithm") > 0;
    let mechanisms = [form, authorizations > 0, v2_query, v4_query]
        .iter()
        .filter(|m| **m)
        .count();
    if mechanisms > 1 || authorizations > 1 {
        return Err(invalid_argument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        ));
    }
    if form {
        return Err(err(
            S3ErrorCode::NotImplemented,
            http::StatusCode::NOT_IMPLEMENTED,
            "POST object uploads (HTML forms) are not supported yet; use PUT or a presigned PUT URL. Nothing was stored.".into(),
        ));
    }
    let authorization = match headers.get(http::header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| {
            invalid_argument("Unsupported Authorization Type: only AWS4-HMAC-SHA256 is accepted")
        })?),
        None => None,
    };
    if authorization.is_some_and(|a| a.starts_with("AWS ")) {
        return Err(err(
            S3ErrorCode::InvalidRequest,
            http::StatusCode::BAD_REQUEST,
            "SigV2 is not supported; use SigV4 (AWS4-HMAC-SHA256).".into(),
        ));
    }
    if v2_query {
        if let Some(p) = super::sigv2::PARAMS.iter().find(|p| count(p) != 1) {
            return Err(query_error(format!(
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters, each once ({p} is {}).",
                if count(p) == 0 { "missing" } else { "repeated" }
            )));
        }
        if !matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::PUT
        ) {
            return Err(err(
                S3ErrorCode::InvalidRequest,
                http::StatusCode::BAD_REQUEST,
                "SigV2 presigned URLs are accepted for GET, HEAD and PUT only; sign this request with SigV4 (AWS4-HMAC-SHA256).".into(),
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match param("Expires").map(str::parse::<u64>) {
            Some(Ok(at)) if at < now => {
                return Err(err(
                    S3ErrorCode::AccessDenied,
                    http::StatusCode::FORBIDDEN,
                    "Request has expired".into(),
                ));
            }
            Some(Ok(at)) if at - now <= MAX_PRESIGNED_SECS => {}
            _ => {
                return Err(query_error(format!(
                    "Expires must be a time in seconds since the epoch at most {MAX_PRESIGNED_SECS} seconds (7 days) ahead."
                )));
            }
        }
        return Ok(Signed::PresignedV2);
    }
    if v4_query {
        if let Some(p) = PRESIGNED_PARAMS.iter().find(|p| count(p) != 1) {
            return Err(query_error(format!(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters, each once ({p} is {}).",
                if count(p) == 0 { "missing" } else { "repeated" }
            )));
        }
        if param("X-Amz-Algorithm") != Some(ALGORITHM) {
            return Err(query_error(format!(
                "X-Amz-Algorithm only supports \"{ALGORITHM}\"."
            )));
        }
        match param("X-Amz-Expires").map(str::parse::<u64>) {
            Some(Ok(s)) if s <= MAX_PRESIGNED_SECS => {}
            _ => {
                return Err(query_error(format!(
                    "X-Amz-Expires must be a number of seconds of at most {MAX_PRESIGNED_SECS} (7 days)."
                )));
            }
        }
        return Ok(Signed::Presigned {
            credential: param("X-Amz-Credential").unwrap_or(""),
            signed: param("X-Amz-SignedHeaders").unwrap_or(""),
        });
    }
    let Some(a) = authorization else {
        return Ok(Signed::Anonymous);
    };
    let rest = a
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            invalid_argument("Unsupported Authorization Type: only AWS4-HMAC-SHA256 is accepted")
        })?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    Ok(Signed::Header {
        credential: field("Credential"),
        signed: field("SignedHeaders"),
    })
}

/// Why `req` must not reach s3s, if it must not; else the mechanism that authenticates it.
pub fn screen<B>(req: &http::Request<B>, opts: &ScreenOptions) -> Result<AuthMethod, S3Error> {
    let headers = req.headers();
    // Every header of a write may end up in a stored record (upload or object attributes).
    if matches!(*req.method(), http::Method::PUT | http::Method::POST) {
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if size > MAX_WRITE_HEADERS {
            return Err(err(
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

    let (method, credential, signed) = match decide(req, &query)? {
        Signed::Anonymous => {
            // Refused later by the access check; no signature to cover anything.
            sse(headers, &query)?;
            return Ok(AuthMethod::Anonymous);
        }
        Signed::PresignedV2 => {
            // Every `x-amz-*` header is part of a SigV2 string to sign: none is unsigned.
            sse(headers, &query)?;
            return Ok(AuthMethod::PresignedV2);
        }
        Signed::Header { credential, signed } => (AuthMethod::Header, credential, signed),
        Signed::Presigned { credential, signed } => {
            (AuthMethod::Presigned, Some(credential), Some(signed))
        }
    };
    let malformed = |msg: String| {
        if method == AuthMethod::Presigned {
            query_error(msg)
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
                return Err(malformed(format!(
                    "The credential scope names the service '{service}'; this endpoint serves only 's3'."
                )));
            }
            if opts.require_region && region != opts.region {
                return Err(malformed(format!(
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
        return Err(err(
            S3ErrorCode::AccessDenied,
            http::StatusCode::FORBIDDEN,
            format!(
                "There were headers present in the request which were not signed: {}",
                unsigned.join(", ")
            ),
        ));
    }
    sse(headers, &query)?;
    Ok(method)
}

/// Refuses every server-side-encryption request header (or presigned query parameter).
fn sse(headers: &http::HeaderMap, query: &[(String, String)]) -> Result<(), S3Error> {
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
        });
    let Some(named) = named else {
        return Ok(());
    };
    Err(err(
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
        req_as("PUT", uri, headers)
    }

    fn req_as(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn code(e: Result<AuthMethod, S3Error>) -> Option<String> {
        e.err().map(|e| e.code().as_str().to_string())
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
        assert!(screen(&signed, &opts(false)).is_ok());
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
        .unwrap_err();
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
        assert!(screen(&req(&q("604800"), &[]), &opts(false)).is_ok());
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
            .is_ok()
        );
    }

    #[test]
    fn sigv2_headers_are_refused_and_presigned_urls_bounded() {
        let e = screen(
            &req("/b/k", &[("authorization", "AWS AK:c2ln")]),
            &opts(false),
        )
        .unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::InvalidRequest);
        assert!(e.message().unwrap().contains("SigV2 is not supported"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url =
            |expires: String| format!("/b/k?AWSAccessKeyId=AK&Expires={expires}&Signature=c2ln");
        let within = url((now + MAX_PRESIGNED_SECS - 60).to_string());
        for method in ["GET", "HEAD", "PUT"] {
            assert_eq!(
                screen(&req_as(method, &within, &[]), &opts(false)).unwrap(),
                AuthMethod::PresignedV2
            );
        }
        for method in ["POST", "DELETE"] {
            assert_eq!(
                code(screen(&req_as(method, &within, &[]), &opts(false))).as_deref(),
                Some("InvalidRequest"),
                "{method}"
            );
        }
        let expired = url((now - 1).to_string());
        assert_eq!(
            code(screen(&req_as("GET", &expired, &[]), &opts(false))).as_deref(),
            Some("AccessDenied")
        );
        for bad in [
            url((now + MAX_PRESIGNED_SECS + 60).to_string()),
            url("soon".into()),
            format!("{within}&Expires={now}"),
            "/b/k?AWSAccessKeyId=AK&Signature=c2ln".into(),
        ] {
            assert_eq!(
                code(screen(&req_as("GET", &bad, &[]), &opts(false))).as_deref(),
                Some("AuthorizationQueryParametersError"),
                "{bad}"
            );
        }
        // Encryption requested through a SigV2 URL is refused as through any other.
        assert_eq!(
            code(screen(
                &req_as(
                    "PUT",
                    &within,
                    &[("x-amz-server-side-encryption", "AES256")]
                ),
                &opts(false)
            ))
            .as_deref(),
            Some("NotImplemented")
        );
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
        assert!(screen(&with("eu-west-9/s3"), &opts(false)).is_ok());
        assert_eq!(
            code(screen(&with("eu-west-9/s3"), &opts(true))).as_deref(),
            Some("AuthorizationHeaderMalformed")
        );
        assert!(screen(&with("us-east-1/s3"), &opts(true)).is_ok());
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
            .unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::NotImplemented, "{h}");
            assert!(e.message().unwrap().contains(h), "{e:?}");
        }
        let e = screen(
            &req(
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&x-amz-server-side-encryption=AES256&X-Amz-Signature=00",
                &[],
            ),
            &opts(false),
        )
        .unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::NotImplemented);
    }

    const PRESIGNED: &str = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00";

    /// The requests of the second hostile review: each carried one mechanism the screen
    /// checked and another that s3s verified.
    #[test]
    fn two_mechanisms_are_refused_and_one_is_decided() {
        let two = [
            // A presigned PUT URL plus any Authorization header, and a copy source.
            req(
                PRESIGNED,
                &[("authorization", "Bearer x"), ("x-amz-copy-source", "/b/s")],
            ),
            req(PRESIGNED, &[("authorization", AUTH)]),
            // A SigV2 query URL with an X-Amz-Signature appended.
            req(
                "/b/k?AWSAccessKeyId=AK&Expires=4133894400&Signature=c2ln&X-Amz-Signature=x",
                &[],
            ),
            // Two Authorization headers.
            req("/b/k", &[("authorization", AUTH), ("authorization", AUTH)]),
            // A form carrying a header signature.
            req_as(
                "POST",
                "/b",
                &[
                    ("content-type", "multipart/form-data; boundary=x"),
                    ("authorization", AUTH),
                ],
            ),
        ];
        for r in two {
            let e = screen(&r, &opts(false)).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::InvalidArgument, "{r:?}");
            assert!(
                e.message()
                    .unwrap()
                    .starts_with("Only one auth mechanism allowed"),
                "{e:?}"
            );
        }
        assert_eq!(
            screen(&req(PRESIGNED, &[]), &opts(false)).unwrap(),
            AuthMethod::Presigned
        );
        assert_eq!(
            screen(&req("/b/k", &[("authorization", AUTH)]), &opts(false)).unwrap(),
            AuthMethod::Header
        );
        assert_eq!(
            screen(&req("/b/k", &[]), &opts(false)).unwrap(),
            AuthMethod::Anonymous
        );
    }

    #[test]
    fn only_the_exact_algorithm_token_passes() {
        for a in [
            AUTH.replace("AWS4-HMAC-SHA256", "aws4-hmac-sha256"),
            AUTH.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            AUTH.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256,"),
            "Bearer x".into(),
        ] {
            let e = screen(&req("/b/k", &[("authorization", &a)]), &opts(false)).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::InvalidArgument, "{a}");
        }
        let lower = PRESIGNED.replace("Algorithm=AWS4-HMAC-SHA256", "Algorithm=aws4-hmac-sha256");
        assert_eq!(
            code(screen(&req(&lower, &[]), &opts(false))).as_deref(),
            Some("AuthorizationQueryParametersError")
        );
        // Each presigned parameter once: a second X-Amz-Expires is not read past the first.
        let twice = format!("{PRESIGNED}&X-Amz-Expires=31536000");
        assert_eq!(
            code(screen(&req(&twice, &[]), &opts(false))).as_deref(),
            Some("AuthorizationQueryParametersError")
        );
    }

    #[test]
    fn a_form_post_is_refused_before_its_body_in_any_spelling() {
        for ct in [
            "multipart/form-data; boundary=x",
            "Multipart/Form-Data;boundary=x",
            "  multipart/form-data",
            "multipart/mixed",
        ] {
            let e =
                screen(&req_as("POST", "/b", &[("content-type", ct)]), &opts(false)).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::NotImplemented, "{ct}");
        }
        // Other POSTs (DeleteObjects, CompleteMultipartUpload) are not forms.
        assert!(
            screen(
                &req_as("POST", "/b?delete", &[("content-type", "application/xml")]),
                &opts(false)
            )
            .is_ok()
        );
    }
}
