//! Files the registry writes that hold personal data (CSV of an export,
//! of `gen-demo` and `db migrate`'s passage): created 0600, whatever the
//! umask, so that no other user reads a plain copy while it exists. A
//! leaf file: nothing of the registry's own.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates (or truncates) `path` for writing, mode 0600 when created.
/// An existing file is truncated and narrowed to 0600 as well.
pub fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}
