//! WebSocket upgrades pass through the gateway: the handshake is forwarded
//! with the gateway's request headers, then both connections are spliced and
//! frames flow both ways untouched.

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use support::{GatewayProcess, free_addr};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::Message;

/// A WebSocket echo server. Every handshake's request path and headers are
/// sent on the returned channel.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<(String, HeaderMap)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // The Result type is tungstenite's `Callback` signature.
                #[allow(clippy::result_large_err)]
                let callback = |request: &Request, response: Response| {
                    let _ = tx.send((request.uri().to_string(), request.headers().clone()));
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                // On a Close frame tungstenite queues the reply and sends it
                // on the next read, which then ends the stream.
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn websocket_frames_are_echoed_through_the_gateway() {
    let (upstream, mut handshakes) = echo_server().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: live
    listen: {listen}
    routes:
      - match: {{ path_prefix: /live }}
        rewrite: {{ strip_prefix: /live }}
        service: chat
services:
  chat: {{ targets: ["{upstream}"] }}
"#
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    let mut request = format!("ws://{listen}/live/chat?room=7")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-request-id", "ws-handshake-1".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-request-id"], "ws-handshake-1");

    // The upstream saw the rewritten path and the gateway's forwarding headers.
    let (path, headers) = handshakes.recv().await.expect("upstream handshake");
    assert_eq!(path, "/chat?room=7");
    assert_eq!(headers["x-request-id"], "ws-handshake-1");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], listen.to_string());
    assert!(
        headers["upgrade"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );

    ws.send(Message::text("hello, zimmart")).await.unwrap();
    let echoed = ws.next().await.expect("echo").expect("text frame");
    assert_eq!(echoed, Message::text("hello, zimmart"));

    let binary: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    let echoed = ws.next().await.expect("echo").expect("binary frame");
    assert_eq!(echoed, Message::binary(binary));

    // Many small frames in a row keep their order.
    for i in 0..100 {
        ws.send(Message::text(format!("msg {i}"))).await.unwrap();
    }
    for i in 0..100 {
        let echoed = ws.next().await.expect("echo").expect("frame");
        assert_eq!(echoed, Message::text(format!("msg {i}")));
    }

    // A clean close is answered by the upstream through the tunnel.
    ws.close(None).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the upstream's Close frame, got {other:?}"),
    }
    assert!(ws.next().await.is_none(), "the tunnel ends after the close");
}
