//! A minimal HTTP/1.1 GET for `medic status` and the tests: medic's own endpoints only, on
//! plain `http://` (TLS belongs to the reverse proxy in front, if any).

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{Request, header};
use http_body_util::{BodyExt, Empty};

/// How long a whole request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// GET `url`, with `token` as a bearer token; returns the status code and the body.
pub async fn get(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(TIMEOUT, get_now(url, token))
        .await
        .with_context(|| format!("{url} did not answer within {TIMEOUT:?}"))?
}

async fn get_now(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let uri: axum::http::Uri = url.parse().with_context(|| format!("bad URL `{url}`"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "`{url}`: only http:// URLs are supported (TLS is the reverse proxy's job)"
    );
    let authority = uri
        .authority()
        .with_context(|| format!("`{url}` has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::get(path).header(header::HOST, authority.as_str());
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
