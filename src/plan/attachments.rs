//! Files a reply can carry: `reply(template, #{ attachments: ["checkin-guide.pdf"] })`.
//!
//! Owns the loaded attachment files ([`Attachments`]: `<dir>/<name>` and per-property
//! overrides `<dir>/<property_id>/<name>`, the override wins), their content hash (sha256,
//! the key uploads are reused by) and size, the size limit ([`MAX_ATTACHMENT_BYTES`]), the
//! rule for what an attachment name may be ([`valid_name`]), and keeping the last good
//! version of a file that can no longer be read on an update.
//! Must not: read files (`content` lists and reads them and hands over
//! [`AttachmentSource`]s), upload or send anything (the executor does), or read a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::base::diagnostics::{content_version, Changes, SourceProblem};

/// The largest attachment accepted (10 MiB): larger files are rejected when loaded and
/// `rules check` fails on a rule that names one. Channex documents no limit; messaging
/// channels (Airbnb, Booking.com) refuse files of this order.
pub const MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;

/// Why an attachment named by a rule cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment `{name}` not found (property {property_id})")]
    NotFound { name: String, property_id: String },
}

/// One attachment file as the content layer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSource {
    /// The file name, e.g. `checkin-guide.pdf`.
    pub name: String,
    /// `Some(id)` for an override in `<dir>/<id>/`.
    pub property_id: Option<String>,
    pub file: PathBuf,
    /// The file's content, or why it could not be read.
    pub bytes: Result<Vec<u8>, SourceProblem>,
}

/// One loaded attachment. Cheap to clone (the bytes are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentFile {
    pub name: String,
    pub property_id: Option<String>,
    pub file: PathBuf,
    /// Full sha256 of the content, hex: uploads are reused by it.
    pub sha256: String,
    pub size: usize,
    /// MIME type from the file extension (`application/octet-stream` when unknown).
    pub content_type: &'static str,
    pub bytes: Arc<[u8]>,
}

impl fmt::Debug for AttachmentFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentFile")
            .field("file", &self.file)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn key_of(name: &str, property_id: Option<&str>) -> String {
    match property_id {
        Some(p) => format!("{p}/{name}"),
        None => name.to_string(),
    }
}

/// Whether `name` may name an attachment: a plain file name (no folder, not hidden, no
/// `..`), at most 200 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.trim() == name
}

/// The loaded attachments, by `[<property_id>/]<name>`.
#[derive(Debug, Clone, Default)]
pub struct Attachments {
    files: Arc<BTreeMap<String, AttachmentFile>>,
}

impl Attachments {
    /// Builds the attachments from `sources`; unreadable or oversized files are left out and
    /// reported.
    pub fn from_sources(sources: Vec<AttachmentSource>) -> (Attachments, Vec<SourceProblem>) {
        let (a, changes) = Attachments::default().update(sources);
        (a, changes.rejected)
    }

    /// The attachments after the files in `sources` (all files now present): unchanged
    /// files are kept, new or changed ones taken, one that can no longer be read (or grew
    /// past the limit) keeps its last good version, files absent from `sources` are dropped.
    pub fn update(&self, sources: Vec<AttachmentSource>) -> (Attachments, Changes) {
        let mut changes = Changes::default();
        let mut files = BTreeMap::new();
        for source in sources {
            let key = key_of(&source.name, source.property_id.as_deref());
            let previous = self.files.get(&key);
            match loaded(source, previous, &mut changes) {
                Some(file) => {
                    files.insert(key, file);
                }
                None => {
                    if let Some(prev) = previous {
                        files.insert(key, prev.clone());
                    }
                }
            }
        }
        for (key, prev) in self.files.iter() {
            if !files.contains_key(key) {
                changes.removed.push(prev.file.clone());
            }
        }
        if changes.accepted.is_empty() && changes.removed.is_empty() {
            return (self.clone(), changes);
        }
        let next = Attachments {
            files: Arc::new(files),
        };
        (next, changes)
    }

    /// The file `name` resolves to for `property_id` (override first).
    pub fn resolve(&self, name: &str, property_id: &str) -> Option<&AttachmentFile> {
        self.files
            .get(&key_of(name, Some(property_id)))
            .or_else(|| self.files.get(name))
    }

    /// The file `name` resolves to for `property_id`, or why there is none.
    pub fn get(&self, name: &str, property_id: &str) -> Result<AttachmentFile, AttachmentError> {
        self.resolve(name, property_id)
            .cloned()
            .ok_or_else(|| AttachmentError::NotFound {
                name: name.to_string(),
                property_id: property_id.to_string(),
            })
    }

    /// Whether a file `name` exists globally or for any property.
    pub fn exists_anywhere(&self, name: &str) -> bool {
        self.files.values().any(|f| f.name == name)
    }

    pub fn files(&self) -> impl Iterator<Item = &AttachmentFile> {
        self.files.values()
    }
}

/// The file for `source`: the previous one if unchanged, the new one (accepted), or `None`
/// when it cannot be read or is too large (rejected).
fn loaded(
    source: AttachmentSource,
    previous: Option<&AttachmentFile>,
    changes: &mut Changes,
) -> Option<AttachmentFile> {
    let AttachmentSource {
        name,
        property_id,
        file,
        bytes,
    } = source;
    let bytes = match bytes {
        Ok(b) => b,
        Err(problem) => {
            changes.rejected.push(problem);
            return None;
        }
    };
    if bytes.len() > MAX_ATTACHMENT_BYTES {
        changes.rejected.push(SourceProblem::new(
            &file,
            None,
            format!(
                "attachment is {} bytes, over the limit of {MAX_ATTACHMENT_BYTES} bytes (10 MiB)",
                bytes.len()
            ),
        ));
        return None;
    }
    let sha256 = hex_sha256(&bytes);
    if let Some(prev) = previous.filter(|p| p.sha256 == sha256 && p.file == file) {
        return Some(prev.clone());
    }
    changes
        .accepted
        .push((file.clone(), content_version(&bytes)));
    Some(AttachmentFile {
        content_type: content_type(&name),
        size: bytes.len(),
        sha256,
        name,
        property_id,
        file,
        bytes: bytes.into(),
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// MIME type by extension: the kinds hosts send guests.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, pid: Option<&str>, bytes: Vec<u8>) -> AttachmentSource {
        let file = match pid {
            Some(p) => PathBuf::from(format!("attachments/{p}/{name}")),
            None => PathBuf::from(format!("attachments/{name}")),
        };
        AttachmentSource {
            name: name.into(),
            property_id: pid.map(str::to_string),
            file,
            bytes: Ok(bytes),
        }
    }

    #[test]
    fn the_property_override_wins_and_hashes_tell_contents_apart() {
        let (a, problems) = Attachments::from_sources(vec![
            source("guide.pdf", None, b"global".to_vec()),
            source("guide.pdf", Some("p1"), b"casa".to_vec()),
        ]);
        assert!(problems.is_empty());
        let p1 = a.resolve("guide.pdf", "p1").expect("override");
        let p2 = a.resolve("guide.pdf", "p2").expect("global");
        assert_eq!(p1.bytes.as_ref(), b"casa");
        assert_eq!(p2.size, 6);
        assert_ne!(p1.sha256, p2.sha256);
        assert_eq!(p2.sha256.len(), 64);
        assert_eq!(p2.content_type, "application/pdf");
        assert!(a.get("nope.pdf", "p1").is_err());
    }

    #[test]
    fn oversized_files_are_rejected_and_the_last_good_version_stays() {
        let (a, _) = Attachments::from_sources(vec![source("big.pdf", None, vec![1; 10])]);
        let (b, changes) = a.update(vec![source(
            "big.pdf",
            None,
            vec![0; MAX_ATTACHMENT_BYTES + 1],
        )]);
        assert_eq!(changes.rejected.len(), 1);
        assert!(changes.rejected[0].message.contains("over the limit"));
        assert_eq!(b.resolve("big.pdf", "p").expect("kept").size, 10);
        let (c, changes) = b.update(vec![]);
        assert_eq!(changes.removed, [PathBuf::from("attachments/big.pdf")]);
        assert!(c.resolve("big.pdf", "p").is_none());
    }

    #[test]
    fn names_are_plain_file_names() {
        assert!(valid_name("checkin-guide.pdf"));
        for bad in ["", "../x.pdf", "a/b.pdf", ".hidden", " x.pdf", "a\\b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
