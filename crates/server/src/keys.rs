//! Secrets the server needs: the JWT secret and the vault key. Given by configuration, or
//! generated once (256 random bits) and kept in the data directory, readable only by us.
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use rand::RngCore;

use crate::config::ConfigError;

/// Reads `<data_dir>/<file>`, or creates it with a fresh random secret.
pub fn persisted_secret(
    data_dir: &Path,
    file: &str,
    setting: &'static str,
) -> Result<String, ConfigError> {
    let path = data_dir.join(file);
    if let Ok(s) = fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if s.len() >= 32 {
            return Ok(s);
        }
        return Err(ConfigError::new(
            setting,
            format!(
                "{} holds a secret shorter than 32 characters",
                path.display()
            ),
        ));
    }
    fs::create_dir_all(data_dir)
        .map_err(|e| ConfigError::new(setting, format!("creating {}: {e}", data_dir.display())))?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ConfigError::new(setting, format!("writing {}: {e}", path.display())))?;
    f.write_all(secret.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| ConfigError::new(setting, format!("writing {}: {e}", path.display())))?;
    Ok(secret)
}

/// The JWT secret: configured (checked) or persisted in the data directory.
pub fn jwt_secret(configured: Option<&str>, data_dir: &Path) -> Result<String, ConfigError> {
    match configured {
        Some(s) if s.len() < 32 => Err(ConfigError::new(
            "JWT_SECRET",
            "must be at least 32 characters",
        )),
        Some(s) => Ok(s.to_string()),
        None => persisted_secret(data_dir, "jwt_secret", "JWT_SECRET"),
    }
}
