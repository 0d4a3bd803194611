//! Serves the browser demo's static files from a directory, read-only.

use std::path::{Component, Path, PathBuf};

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use octate_protocol::ErrorCode;

use crate::http::{Body, error};

/// Largest static file served, in bytes.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Serves `path` from `dir`; refuses anything that would leave the directory.
pub(crate) async fn serve(dir: &Path, path: &str) -> Response<Body> {
    let Some(file) = resolve(dir, path) else {
        return error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file");
    };
    let file = if tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_dir()) {
        file.join("index.html")
    } else {
        file
    };
    match tokio::fs::metadata(&file).await {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_FILE_BYTES => {}
        _ => return error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file"),
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        Err(_) => error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file"),
    }
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
