//! The web dashboard: one page and its script and style sheet, embedded in the binary, served at
//! `/`. The page holds no data: it reads everything from the API with the token the user logs
//! in with (kept in the browser tab's session storage), so it has the API's access rule and
//! needs nothing else at run time.
//!
//! | Route              | Answer                       |
//! |--------------------|------------------------------|
//! | `GET /`            | the page (`dashboard/index.html`) |
//! | `GET /ui/app.js`   | its script (`dashboard/app.js`), plain JavaScript, no build step |
//! | `GET /ui/style.css`| its style sheet (`dashboard/style.css`) |

use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");

/// Paths any caller may fetch: the page and its assets, which hold no data.
pub const PUBLIC_PATHS: &[&str] = &["/", "/ui/app.js", "/ui/style.css"];

/// The dashboard's routes.
pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(script))
        .routes(routes!(style))
}

/// An embedded asset with its content type. Assets change only with the binary; the browser
/// checks them again on every load.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`: the dashboard's page.
#[utoipa::path(get, path = "/", tag = "dashboard", security(()),
    responses((status = 200, description = "The dashboard's page", body = String, content_type = "text/html")))]
async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`: the dashboard's script.
#[utoipa::path(get, path = "/ui/app.js", tag = "dashboard", security(()),
    responses((status = 200, description = "The dashboard's script", body = String, content_type = "text/javascript")))]
async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/style.css`: the dashboard's style sheet.
#[utoipa::path(get, path = "/ui/style.css", tag = "dashboard", security(()),
    responses((status = 200, description = "The dashboard's style sheet", body = String, content_type = "text/css")))]
async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
