//! With feature `pubsub`: the gRPC client and server of the Pub/Sub API's service
//! (`eventbus.v1.PubSub`), generated over the messages of `src/pubsub/proto.rs` — no
//! `.proto` compiler needed.

fn main() {
    #[cfg(feature = "pubsub")]
    pubsub();
}

#[cfg(feature = "pubsub")]
fn pubsub() {
    use tonic_build::manual::{Builder, Method, Service};
    // (method, route, request, response, client streams, server streams)
    let methods = [
        (
            "subscribe",
            "Subscribe",
            "FetchRequest",
            "FetchResponse",
            true,
            true,
        ),
        (
            "get_schema",
            "GetSchema",
            "SchemaRequest",
            "SchemaInfo",
            false,
            false,
        ),
        (
            "get_topic",
            "GetTopic",
            "TopicRequest",
            "TopicInfo",
            false,
            false,
        ),
        (
            "publish",
            "Publish",
            "PublishRequest",
            "PublishResponse",
            false,
            false,
        ),
        (
            "publish_stream",
            "PublishStream",
            "PublishRequest",
            "PublishResponse",
            true,
            true,
        ),
        (
            "managed_subscribe",
            "ManagedSubscribe",
            "ManagedFetchRequest",
            "ManagedFetchResponse",
            true,
            true,
        ),
    ];
    let mut service = Service::builder().name("PubSub").package("eventbus.v1");
    for (name, route, input, output, client_streaming, server_streaming) in methods {
        let mut method = Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("super::{input}"))
            .output_type(format!("super::{output}"))
            .codec_path("tonic_prost::ProstCodec");
        if client_streaming {
            method = method.client_streaming();
        }
        if server_streaming {
            method = method.server_streaming();
        }
        service = service.method(method.build());
    }
    Builder::new().compile(&[service.build()]);
    println!("cargo:rerun-if-changed=build.rs");
}
