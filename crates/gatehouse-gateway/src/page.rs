//! What the public listener serves besides `/ws`: the deployment's choice ([`Page`]).
//!
//! A gateway does not know what application its workers run, so it cannot know which page (if
//! any) belongs at `/`: an echo or webhook cluster has none, a chat cluster has the chat app's,
//! and a product has its own site. The deployment says which (`--page chat|none|DIR`), and the
//! gateway only serves it. Nothing here is on the message path.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

/// Largest file a [`Page::Dir`] serves: this is a page for the gateway's clients, not a file
/// server, and each request reads its file whole.
pub const MAX_PAGE_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The page the gateway serves at `/` (and, for a directory, the files below it).
#[derive(Debug, Clone, Default)]
pub enum Page {
    /// Nothing: `/` answers 404. The right answer for clusters whose clients are programs, so
    /// that no page pretends to be an application the workers do not run.
    #[default]
    None,
    /// One built-in HTML page at `/` (the chat app's page, compiled into the binary so that a
    /// gateway needs no files beside it); every other path answers 404.
    Html(&'static str),
    /// Static files from a directory: `/` is its `index.html`, `/a/b.js` is `DIR/a/b.js`, a
    /// path ending in `/` its directory's `index.html`. Read at each request, so a deployment
    /// replaces its files without restarting the gateway. Hidden files (a segment starting with
    /// `.`) and anything resolving outside the directory (`..`, symbolic links out) answer 404.
    Dir(PathBuf),
}

/// Why a [`Page`] is refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A page directory must exist when the gateway starts: a typo should stop it, not turn
    /// every visit into a 404.
    #[error("the page directory {0} is not a readable directory")]
    NotADirectory(PathBuf),
    /// A page directory serves `/` from its `index.html`.
    #[error("the page directory {0} has no index.html")]
    NoIndex(PathBuf),
}

impl Page {
    /// Checks a directory page before the gateway starts.
    pub fn check(&self) -> Result<(), PageError> {
        if let Page::Dir(dir) = self {
            if !dir.is_dir() {
                return Err(PageError::NotADirectory(dir.clone()));
            }
            if !dir.join("index.html").is_file() {
                return Err(PageError::NoIndex(dir.clone()));
            }
        }
        Ok(())
    }

    /// The answer to `GET /<path>` (`path` without its leading `/`, percent-decoded).
    async fn serve(&self, path: &str) -> Response {
        match self {
            Page::None => not_found(),
            Page::Html(html) if path.is_empty() => Html(*html).into_response(),
            Page::Html(_) => not_found(),
            Page::Dir(dir) => match file_in(dir, path).await {
                Some(file) => read(&file).await,
                None => not_found(),
            },
        }
    }
}

/// The routes of the page: `/`, and every path no other route of the public listener takes.
pub(crate) fn router(page: Page) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/{*path}", get(file))
        .with_state(Arc::new(page))
}

async fn index(State(page): State<Arc<Page>>) -> Response {
    page.serve("").await
}

async fn file(State(page): State<Arc<Page>>, UrlPath(path): UrlPath<String>) -> Response {
    page.serve(&path).await
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The file `path` names inside `dir`, or `None` when it names no regular file there.
async fn file_in(dir: &Path, path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        // One normal component each: no `..`, no `.`, no root or drive, no hidden files.
        let mut components = Path::new(segment).components();
        let (Some(Component::Normal(_)), None) = (components.next(), components.next()) else {
            return None;
        };
        if segment.starts_with('.') || segment.contains('\\') {
            return None;
        }
        relative.push(segment);
    }
    let mut candidate = dir.join(&relative);
    if path.is_empty() || path.ends_with('/') {
        candidate.push("index.html");
    }
    // Symbolic links may point anywhere: what counts is where the file really is.
    let root = tokio::fs::canonicalize(dir).await.ok()?;
    let real = tokio::fs::canonicalize(&candidate).await.ok()?;
    if !real.starts_with(&root) || !tokio::fs::metadata(&real).await.ok()?.is_file() {
        return None;
    }
    Some(real)
}

async fn read(file: &Path) -> Response {
    let too_large = || (StatusCode::INTERNAL_SERVER_ERROR, "file too large for a page\n").into_response();
    match tokio::fs::metadata(file).await {
        Ok(meta) if meta.len() > MAX_PAGE_FILE_BYTES => return too_large(),
        Ok(_) => {}
        Err(_) => return not_found(),
    }
    let Ok(body) = tokio::fs::read(file).await else {
        return not_found();
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(file)));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Files change without a restart: browsers revalidate instead of keeping an old copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The media type of a page's file, by extension (what a browser needs to run or show it).
fn content_type(file: &Path) -> &'static str {
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or_default();
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throw-away page directory, removed on drop (this crate has no tempfile dependency).
    struct Site(PathBuf);

    impl Drop for Site {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn site() -> Site {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gatehouse-page-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "root").unwrap();
        std::fs::write(dir.join("app.js"), "js").unwrap();
        std::fs::write(dir.join("sub/index.html"), "sub").unwrap();
        std::fs::write(dir.join(".secret"), "hidden").unwrap();
        Site(dir)
    }

    #[tokio::test]
    async fn a_directory_page_resolves_only_regular_files_inside_it() {
        let site = site();
        let root = std::fs::canonicalize(&site.0).unwrap();
        assert_eq!(file_in(&site.0, "").await, Some(root.join("index.html")));
        assert_eq!(file_in(&site.0, "app.js").await, Some(root.join("app.js")));
        assert_eq!(file_in(&site.0, "sub/").await, Some(root.join("sub/index.html")));
        for refused in [
            "../index.html",
            "sub/../app.js",
            ".secret",
            "sub",
            "missing.js",
            "./app.js",
            "a\\b",
        ] {
            assert_eq!(file_in(&site.0, refused).await, None, "{refused}");
        }
    }

    #[tokio::test]
    async fn no_page_is_a_404_and_a_built_in_page_lives_only_at_the_root() {
        assert_eq!(Page::None.serve("").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(Page::Html("<p>chat</p>").serve("").await.status(), StatusCode::OK);
        assert_eq!(
            Page::Html("<p>chat</p>").serve("index.html").await.status(),
            StatusCode::NOT_FOUND
        );
        let site = site();
        let page = Page::Dir(site.0.clone());
        let script = page.serve("app.js").await;
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(page.serve(".secret").await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_missing_directory_or_index_is_refused_at_start() {
        let site = site();
        assert!(Page::Dir(site.0.clone()).check().is_ok());
        assert!(matches!(
            Page::Dir(site.0.join("nope")).check(),
            Err(PageError::NotADirectory(_))
        ));
        std::fs::remove_file(site.0.join("index.html")).unwrap();
        assert!(matches!(Page::Dir(site.0.clone()).check(), Err(PageError::NoIndex(_))));
    }

    #[test]
    fn scripts_and_styles_get_the_type_a_browser_runs() {
        assert_eq!(content_type(Path::new("a.JS")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
    }
}
