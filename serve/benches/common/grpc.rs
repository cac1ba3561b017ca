//! A blocking KServe v2 gRPC client for the benchmarks' client threads: tonic's client
//! on a runtime of its own, with the server's message types.

use std::net::SocketAddr;

use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tpsnet_serve::grpc::messages::{
    InferInputTensor, InferRequestedOutputTensor, ModelInferRequest, ModelInferResponse,
};

pub struct GrpcConn {
    runtime: tokio::runtime::Runtime,
    client: Grpc<Channel>,
}

impl GrpcConn {
    pub fn open(addr: SocketAddr) -> Result<GrpcConn, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let channel = runtime
            .block_on(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .connect(),
            )
            .map_err(|e| format!("gRPC connect to {addr}: {e}"))?;
        Ok(GrpcConn {
            runtime,
            client: Grpc::new(channel),
        })
    }

    /// One `ModelInfer` call; the error is the status's code and message.
    pub fn infer(&mut self, request: ModelInferRequest) -> Result<ModelInferResponse, String> {
        let client = &mut self.client;
        self.runtime.block_on(async {
            client.ready().await.map_err(|e| e.to_string())?;
            client
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer"),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    }
}

/// A `ModelInfer` request for one image (NCHW floats) as `raw_input_contents`.
pub fn infer_request(model: &str, input: &str, output: &str, floats: &[f32]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_string(),
        inputs: vec![InferInputTensor {
            name: input.to_string(),
            datatype: "FP32".into(),
            shape: vec![1, 3, 32, 32],
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: output.to_string(),
            ..Default::default()
        }],
        raw_input_contents: vec![floats.iter().flat_map(|f| f.to_le_bytes()).collect()],
        ..Default::default()
    }
}

/// The logits of a raw `ModelInfer` answer.
pub fn logits(response: &ModelInferResponse) -> Result<Vec<f32>, String> {
    let raw = response
        .raw_output_contents
        .first()
        .ok_or("no raw_output_contents in the answer")?;
    Ok(raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
