//! The OpenAPI 3 description of the HTTP API, served at `GET /v2/openapi.json`.
//!
//! The document (`serve/openapi.json`) is written by hand and compiled into the binary.
//! A test reads the routes the router mounts out of this crate's sources and checks that
//! the document lists exactly those paths and methods, so the two cannot drift apart;
//! `serve/tests/openapi.rs` runs schemathesis against a live server with it.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::routes::Shared;

/// The description, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Where the description is served.
pub const PATH: &str = "/v2/openapi.json";

/// The description's route, merged into the server's router (`routes::router`).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route(PATH, get(document))
}

async fn document() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` of every `.route("path", get(..)/post(..))` in `source`.
    fn mounted(source: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for call in source.split(".route(").skip(1) {
            let call = call.trim_start();
            let path = match call.strip_prefix('"') {
                Some(rest) => rest.split('"').next().unwrap().to_string(),
                // `.route(PATH, ...)` with this module's constant.
                None if call.starts_with("PATH") => PATH.to_string(),
                None => panic!("a route whose path is not a literal: {call:.40}"),
            };
            let end = call.find(')').unwrap_or(call.len());
            let handlers = &call[..call.len().min(end + 40)];
            for method in ["get", "post", "put", "delete", "patch"] {
                if handlers.contains(&format!(" {method}("))
                    || handlers.contains(&format!("\n{method}("))
                {
                    out.insert((method.to_string(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_every_route_the_router_mounts() {
        let mut routes = BTreeSet::new();
        for source in [
            include_str!("routes.rs"),
            include_str!("page.rs"),
            include_str!("openapi.rs"),
            include_str!("repository.rs"),
        ] {
            // Only the code, not this test's own text.
            let code = source.split("#[cfg(test)]").next().unwrap();
            routes.extend(mounted(code));
        }
        assert!(routes.len() >= 15, "found too few routes: {routes:?}");
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        let mut described = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    described.insert((method.clone(), path.clone()));
                }
            }
        }
        let missing: Vec<_> = routes.difference(&described).collect();
        let extra: Vec<_> = described.difference(&routes).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "serve/openapi.json differs from the router: undescribed routes {missing:?}, described but not mounted {extra:?}"
        );
        assert_eq!(
            doc["openapi"].as_str().unwrap().split('.').next(),
            Some("3")
        );
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let text = DOCUMENT;
        for piece in text.split("\"$ref\": \"#/").skip(1) {
            let target = piece.split('"').next().unwrap();
            let pointer = format!("/{target}");
            assert!(doc.pointer(&pointer).is_some(), "dangling $ref #/{target}");
        }
    }
}
