//! The gateway end to end: real PostgreSQL, an embedded Kafka-protocol broker, TaskService,
//! and clients speaking native gRPC (HTTP/2) and grpc-web (HTTP/1.1, tonic-web's client).

mod hostile;
mod live;
mod metrics;
mod oidc;
mod proxy;
mod sign_in;
mod text_mode;
mod tokens;
mod tracing_e2e;

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use taskmesh_proto::{
    gateway::v1::live_service_client::LiveServiceClient,
    task::v1::task_service_client::TaskServiceClient,
};
use taskmesh_testkit::Mesh;
use tonic_web::{GrpcWebClientLayer, GrpcWebClientService};

/// An HTTP/1.1 grpc-web transport to the gateway.
pub(crate) type GrpcWeb =
    GrpcWebClientService<Client<HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>>;

/// A grpc-web transport (HTTP/1.1 only, as browsers use it).
pub(crate) fn grpc_web() -> GrpcWeb {
    let client = Client::builder(TokioExecutor::new()).build_http();
    tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(client)
}

/// LiveService over grpc-web.
pub(crate) fn live_web(mesh: &Mesh) -> LiveServiceClient<GrpcWeb> {
    LiveServiceClient::with_origin(grpc_web(), mesh.gateway_url().parse().expect("uri"))
}

/// TaskService over grpc-web, through the gateway.
pub(crate) fn tasks_web(mesh: &Mesh) -> TaskServiceClient<GrpcWeb> {
    TaskServiceClient::with_origin(grpc_web(), mesh.gateway_url().parse().expect("uri"))
}

/// TaskService over native gRPC, through the gateway.
pub(crate) async fn tasks_grpc(mesh: &Mesh) -> TaskServiceClient<tonic::transport::Channel> {
    TaskServiceClient::new(mesh.gateway_channel().await.expect("gateway reachable"))
}
