//! The OpenAPI document: generated from the code, it must describe exactly the routes the app
//! serves, with the status codes each can answer, the `{"detail"}` error body, and the two
//! security schemes Swagger UI's Authorize button offers. Also: `/docs` serves Swagger UI.

use std::collections::BTreeSet;

use crate::common::{TUTORIAL_EMAIL, TUTORIAL_PASSWORD, spawn_app};
use serde_json::Value;

/// The API's routes and every status each can answer, from the README's contract.
const CONTRACT: &[(&str, &str, &[u16])] = &[
    ("get", "/", &[200]),
    (
        "post",
        "/signup",
        &[201, 400, 408, 409, 413, 415, 422, 429, 503],
    ),
    (
        "post",
        "/login",
        &[200, 400, 401, 408, 413, 415, 422, 429, 503],
    ),
    ("get", "/profile", &[200, 401, 503]),
    (
        "post",
        "/token/refresh",
        &[200, 400, 401, 408, 413, 415, 422, 429, 503],
    ),
    ("post", "/logout", &[204, 401, 503]),
    ("post", "/logout/all", &[204, 401, 503]),
    ("get", "/sessions", &[200, 401, 503]),
    ("delete", "/sessions/{id}", &[204, 401, 404, 503]),
    (
        "post",
        "/password",
        &[204, 400, 401, 408, 413, 415, 422, 429, 503],
    ),
    ("get", "/health/live", &[200]),
    ("get", "/health/ready", &[200, 503]),
    ("get", "/metrics", &[200]),
    ("get", "/.well-known/jwks.json", &[200]),
    ("get", "/.well-known/openid-configuration", &[200]),
    ("get", "/.well-known/authlog-log-keys.json", &[200, 503]),
    ("get", "/admin/users", &[200, 401, 403, 422, 503]),
    ("get", "/admin/users/{id}", &[200, 401, 403, 404, 503]),
    (
        "delete",
        "/admin/users/{id}",
        &[204, 401, 403, 404, 409, 503],
    ),
    (
        "delete",
        "/account",
        &[204, 400, 401, 408, 409, 413, 415, 422, 429, 503],
    ),
    (
        "get",
        "/admin/users/{id}/events",
        &[200, 401, 403, 404, 422, 503],
    ),
    (
        "put",
        "/admin/users/{id}/roles/{role}",
        &[204, 401, 403, 404, 422, 503],
    ),
    (
        "delete",
        "/admin/users/{id}/roles/{role}",
        &[204, 401, 403, 404, 409, 422, 503],
    ),
    (
        "post",
        "/admin/users/{id}/disable",
        &[204, 401, 403, 404, 409, 503],
    ),
    (
        "post",
        "/admin/users/{id}/enable",
        &[204, 401, 403, 404, 503],
    ),
    (
        "post",
        "/admin/users/{id}/unlock",
        &[204, 401, 403, 404, 503],
    ),
];

async fn spec() -> (crate::common::TestApp, crate::common::TestLog, Value) {
    let (app, db) = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.expect("the document is JSON");
    (app, db, spec)
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            spec.pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} resolves"))
        }
        None => schema,
    }
}

#[actix_web::test]
async fn the_document_lists_every_route_with_its_status_codes() {
    let (_app, _db, spec) = spec().await;
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1: {}",
        spec["openapi"]
    );

    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, served, "exactly the routes the app serves");

    for (method, path, statuses) in CONTRACT {
        let operation = &spec["paths"][path][method];
        let responses = operation["responses"].as_object().expect("responses");
        let documented: BTreeSet<u16> = responses
            .keys()
            .map(|code| code.parse().expect("numeric status"))
            .collect();
        let expected: BTreeSet<u16> = statuses.iter().copied().collect();
        assert_eq!(documented, expected, "{method} {path}");

        for (code, response) in responses {
            if *path == "/metrics" {
                assert!(response["content"]["text/plain"].is_object());
                continue;
            }
            let schema = resolve(&spec, &response["content"]["application/json"]["schema"]);
            if code == "204" {
                assert!(
                    response.get("content").is_none(),
                    "{method} {path} 204 has no body"
                );
            } else if *path == "/sessions" && code == "200" {
                let item = resolve(&spec, &schema["items"]);
                assert!(item["properties"]["current"].is_object(), "{method} {path}");
            } else if code.starts_with('2') {
                assert!(schema["properties"].is_object(), "{method} {path} {code}");
            } else {
                // Every error is {"detail": string}.
                assert_eq!(
                    schema["properties"]["detail"]["type"], "string",
                    "{path} {code}"
                );
                assert_eq!(schema["required"], serde_json::json!(["detail"]));
            }
        }
    }

    // Challenges and retry hints are part of the contract too.
    for (method, path) in [
        ("post", "/login"),
        ("get", "/profile"),
        ("get", "/admin/users"),
        ("put", "/admin/users/{id}/roles/{role}"),
        ("delete", "/admin/users/{id}/roles/{role}"),
    ] {
        assert!(
            spec["paths"][path][method]["responses"]["401"]["headers"]["WWW-Authenticate"]
                .is_object(),
            "{path}"
        );
    }
    assert!(
        spec["paths"]["/signup"]["post"]["responses"]["503"]["headers"]["Retry-After"].is_object()
    );

    // Sign-up takes JSON; login takes JSON or Swagger's password-grant form.
    let content_types = |path: &str| -> BTreeSet<String> {
        spec["paths"][path]["post"]["requestBody"]["content"]
            .as_object()
            .expect("request body")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        content_types("/signup"),
        BTreeSet::from(["application/json".to_owned()])
    );
    assert_eq!(
        content_types("/login"),
        BTreeSet::from([
            "application/json".to_owned(),
            "application/x-www-form-urlencoded".to_owned()
        ])
    );
    let form = resolve(
        &spec,
        &spec["paths"]["/login"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
            ["schema"],
    );
    let mut required: Vec<&str> = form["required"]
        .as_array()
        .expect("required fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["password", "username"]);
}

#[actix_web::test]
async fn the_document_declares_bearer_and_the_oauth2_password_flow() {
    let (_app, _db, spec) = spec().await;
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    assert_eq!(schemes["oauth2"]["type"], "oauth2");
    assert_eq!(schemes["oauth2"]["flows"]["password"]["tokenUrl"], "/login");

    for (method, path) in [
        ("get", "/profile"),
        ("get", "/admin/users"),
        ("put", "/admin/users/{id}/roles/{role}"),
        ("delete", "/admin/users/{id}/roles/{role}"),
    ] {
        let security = &spec["paths"][path][method]["security"];
        let names: BTreeSet<&str> = security
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} is protected"))
            .iter()
            .flat_map(|requirement| requirement.as_object().expect("requirement").keys())
            .map(String::as_str)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["bearer", "oauth2"]),
            "{method} {path}"
        );
    }
    for path in ["/signup", "/login"] {
        assert!(
            spec["paths"][path]["post"]["security"].is_null(),
            "{path} is public"
        );
    }
}

#[actix_web::test]
async fn docs_redirects_to_swagger_ui_served_from_the_binary() {
    let (app, _db) = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/docs/");

    let response = app.get("/docs/").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let page = response.text().await.expect("html");
    assert!(page.contains("swagger-ui"), "{page}");

    // The initializer points the UI at this service's document.
    let response = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(response.status(), 200);
    let script = response.text().await.expect("script");
    assert!(script.contains("/openapi.json"), "{script}");
}

/// What Swagger UI does on "Authorize" then "Try it out" on `/profile`, over plain HTTP.
#[actix_web::test]
async fn the_swagger_flow_works_end_to_end() {
    let (app, _db, spec) = spec().await;
    let token_url =
        spec["components"]["securitySchemes"]["oauth2"]["flows"]["password"]["tokenUrl"]
            .as_str()
            .expect("token URL");
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    let form = serde_urlencoded::to_string([
        ("grant_type", "password"),
        ("username", TUTORIAL_EMAIL),
        ("password", TUTORIAL_PASSWORD),
    ])
    .expect("encodable");
    let response = app
        .post_raw(
            token_url,
            Some("application/x-www-form-urlencoded"),
            form.into_bytes(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let authorization = format!("Bearer {}", body["access_token"].as_str().expect("token"));
    let response = app.profile(Some(&authorization)).await;
    assert_eq!(response.status(), 200);
    let profile: Value = response.json().await.expect("json");
    assert_eq!(profile["email"], TUTORIAL_EMAIL);
}
