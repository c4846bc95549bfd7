//! Where blobs go: a backend, a container in it, a key prefix.

/// Where a tenant's or a bucket's new blobs go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub backend: String,
    pub container: String,
    #[serde(default)]
    pub prefix: String,
}
