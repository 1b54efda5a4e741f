//! The web console at `/` of the WebSocket listener: static files built
//! into the binary (no build step, nothing fetched from elsewhere) that talk
//! to the broker over `/ws` with the browser client, served at `/flowmesh.js`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");
/// The browser client of bindings/web, the one file the console imports.
const CLIENT: &str = include_str!("../../../bindings/web/flowmesh.js");
const CLIENT_TYPES: &str = include_str!("../../../bindings/web/flowmesh.d.ts");

/// Only this origin's scripts, styles and WebSockets; no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file served at `path`, if the console has one.
pub(super) fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, ctype) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        "/flowmesh.js" => (CLIENT, "text/javascript; charset=utf-8"),
        "/flowmesh.d.ts" => (CLIENT_TYPES, "text/plain; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, ctype.parse().expect("static"));
    // The files change with the binary: always ask again.
    h.insert(hyper::header::CACHE_CONTROL, "no-cache".parse().expect("static"));
    h.insert(hyper::header::CONTENT_SECURITY_POLICY, CSP.parse().expect("static"));
    h.insert(hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff".parse().expect("static"));
    Some(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn serves_the_console_and_the_client() {
        for path in ["/", "/console.js", "/console.css", "/flowmesh.js"] {
            assert!(super::asset(path).is_some(), "{path}");
        }
        assert!(super::asset("/../Cargo.toml").is_none());
        assert!(super::INDEX.contains("/console.js") && super::SCRIPT.contains("/flowmesh.js"));
    }
}
