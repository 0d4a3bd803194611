//! Serves the browser demo's static files from a directory, read-only: nothing outside
//! the directory (no `..`, no hidden files, no symlink that resolves elsewhere), files
//! streamed in chunks, `HEAD` answered from the file's metadata alone.

use std::path::{Component, Path, PathBuf};

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use octate_protocol::ErrorCode;

use super::body::Body;
use super::response::error;

/// Serves `path` from `dir` (only its headers when `head_only`); 404 for anything that
/// is not a regular file inside the directory.
pub(super) async fn serve(dir: &Path, path: &str, head_only: bool) -> Response<Body> {
    let Some(Found { real, len, name }) = locate(dir, path).await else {
        return no_such_file();
    };
    let body = if head_only {
        Body::default()
    } else {
        let Ok(opened) = tokio::fs::File::open(&real).await else {
            return no_such_file();
        };
        // The length sent is that of the file opened, should it have changed since.
        match opened.metadata().await {
            Ok(meta) if meta.is_file() && meta.len() == len => Body::file(opened, len),
            _ => return no_such_file(),
        }
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn no_such_file() -> Response<Body> {
    error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file")
}

/// A regular file found under the static directory.
struct Found {
    /// Its path with every symlink resolved.
    real: PathBuf,
    /// Its length when found.
    len: u64,
    /// The path the request named (its extension gives the content type).
    name: PathBuf,
}

/// The regular file `path` names under `dir` (`index.html` for a directory), or `None`
/// if there is none or it resolves outside `dir`.
async fn locate(dir: &Path, path: &str) -> Option<Found> {
    let mut name = resolve(dir, path)?;
    let root = tokio::fs::canonicalize(dir).await.ok()?;
    let mut real = inside(&root, &name).await?;
    let mut meta = tokio::fs::metadata(&real).await.ok()?;
    if meta.is_dir() {
        name.push("index.html");
        real = inside(&root, &real.join("index.html")).await?;
        meta = tokio::fs::metadata(&real).await.ok()?;
    }
    meta.is_file().then_some(Found {
        real,
        len: meta.len(),
        name,
    })
}

/// `path` with every symlink resolved, if that is still under `root` (itself canonical).
async fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = tokio::fs::canonicalize(path).await.ok()?;
    real.starts_with(root).then_some(real)
}

/// Maps a URL path onto a file under `dir`, or `None` if it tries to escape.
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    let mut out = dir.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => out.push(p),
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_leave_the_directory() {
        let dir = Path::new("/srv/demo");
        assert_eq!(
            resolve(dir, "/index.html"),
            Some(PathBuf::from("/srv/demo/index.html"))
        );
        assert_eq!(resolve(dir, "/"), Some(PathBuf::from("/srv/demo")));
        assert_eq!(resolve(dir, "/../etc/passwd"), None);
        assert_eq!(resolve(dir, "/a/../../x"), None);
        assert_eq!(resolve(dir, "/.git/config"), None);
    }
}
