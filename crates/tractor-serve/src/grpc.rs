//! Open Inference Protocol (V2) over gRPC: `inference.GRPCInferenceService` with typed contents and
//! `raw_input_contents`/`raw_output_contents`, mapping errors to gRPC status codes.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use tractor_model::{Datatype, Tensor};

use crate::codec::{self, BadRequest, OutputSelection};
use crate::payload_log::{Capture, PROTOCOL_GRPC};
use crate::server::{InferError, Server};

/// Code generated from `proto/grpc_predict_v2.proto` by `tests/proto_drift.rs`; committed, never edited.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    include!("generated/inference.rs");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_request::InferInputTensor;
use proto::model_infer_response::InferOutputTensor;
use proto::*;

/// The gRPC service over the shared server.
#[derive(Debug, Clone)]
pub struct Service {
    server: Arc<Server>,
    auth_token: Option<Arc<str>>,
}

impl From<InferError> for Status {
    fn from(e: InferError) -> Self {
        let code = match &e {
            InferError::BadRequest(_) => Code::InvalidArgument,
            InferError::UnknownModel(_) => Code::NotFound,
            InferError::Overloaded => Code::ResourceExhausted,
            InferError::Unavailable(_) => Code::Unavailable,
            InferError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

fn invalid(e: BadRequest) -> Status {
    Status::invalid_argument(e.0)
}

impl Service {
    /// A service answering for `server`; requires `authorization: Bearer <token>` when a token is set.
    pub fn new(server: Arc<Server>, auth_token: Option<String>) -> Service {
        Service {
            server,
            auth_token: auth_token.map(Arc::from),
        }
    }

    fn check_auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.auth_token else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(&**token) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }

    fn version(v: &str) -> Option<&str> {
        if v.is_empty() { None } else { Some(v) }
    }

    async fn infer(
        &self,
        req: ModelInferRequest,
        mut capture: Option<&mut Capture>,
    ) -> Result<ModelInferResponse, Status> {
        let server = &self.server;
        if let Some(capture) = capture.as_deref_mut() {
            capture.id(&req.id);
        }
        server.check_model(&req.model_name, Self::version(&req.model_version))?;
        let inputs = decode_inputs(server, &req).map_err(invalid)?;
        let rows = codec::batch_rows(&server.signature, &inputs).map_err(invalid)?;
        let selection = if req.outputs.is_empty() {
            OutputSelection::all(&server.signature, true)
        } else {
            OutputSelection::select(
                &server.signature,
                req.outputs.iter().map(|o| (o.name.as_str(), true)),
            )
            .map_err(invalid)?
        };
        let id = if req.id.is_empty() {
            None
        } else {
            Some(req.id.as_str())
        };
        if let Some(capture) = capture.as_deref_mut() {
            capture.request(id, &server.signature, &inputs);
        }
        let inferred = server.infer(inputs, rows, id).await?;
        if let Some(capture) = capture {
            capture.response(
                &server.signature,
                selection.outputs.iter().map(|(ix, _)| *ix),
                &inferred.outputs,
                inferred.receipt.as_deref(),
            );
        }
        let outputs = inferred.outputs;
        let mut resp = ModelInferResponse {
            model_name: server.name.clone(),
            model_version: server.version.clone(),
            id: req.id.clone(),
            ..Default::default()
        };
        if let Some(receipt) = inferred.receipt {
            resp.parameters.insert(
                crate::receipt::PARAMETER.to_owned(),
                InferParameter {
                    parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(receipt)),
                },
            );
        }
        for (ix, _) in &selection.outputs {
            let spec = &server.signature.outputs[*ix];
            let tensor = outputs.get(*ix).ok_or_else(|| {
                Status::internal("model returned fewer outputs than its signature")
            })?;
            resp.outputs.push(InferOutputTensor {
                name: spec.name.clone(),
                datatype: spec.datatype.as_str().into(),
                shape: tensor.shape().iter().map(|d| *d as i64).collect(),
                ..Default::default()
            });
            resp.raw_output_contents
                .push(codec::tensor_to_le(spec.datatype, tensor).map_err(Status::internal)?);
        }
        Ok(resp)
    }
}

fn typed<T: codec::Element, U: Copy>(
    values: &[U],
    dims: &[usize],
    n: usize,
    name: &str,
    conv: impl Fn(U) -> Option<T>,
) -> Result<Tensor, BadRequest> {
    if values.len() != n {
        return Err(BadRequest(format!(
            "input '{name}': shape {dims:?} needs {n} values, got {}",
            values.len()
        )));
    }
    let v = values
        .iter()
        .map(|x| conv(*x))
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| BadRequest(format!("input '{name}': value out of range")))?;
    codec::tensor_from_vec(dims, n, v, name)
}

fn decode_inputs(server: &Server, req: &ModelInferRequest) -> Result<Vec<Tensor>, BadRequest> {
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(BadRequest(format!(
            "{} raw_input_contents for {} inputs",
            req.raw_input_contents.len(),
            req.inputs.len()
        )));
    }
    let mut slots: Vec<Option<Tensor>> = server.signature.inputs.iter().map(|_| None).collect();
    for (position, input) in req.inputs.iter().enumerate() {
        let InferInputTensor {
            name,
            datatype,
            shape,
            contents,
            ..
        } = input;
        let ix = server
            .signature
            .inputs
            .iter()
            .position(|x| &x.name == name)
            .ok_or_else(|| BadRequest(format!("unknown input '{name}'")))?;
        if slots[ix].is_some() {
            return Err(BadRequest(format!("input '{name}' given twice")));
        }
        let (dt, dims, elements) =
            codec::check_input(&server.signature.inputs[ix], datatype, shape)?;
        let tensor = if raw {
            codec::tensor_from_le(dt, &dims, elements, &req.raw_input_contents[position], name)?
        } else {
            let contents = contents
                .as_ref()
                .ok_or_else(|| BadRequest(format!("input '{name}' has no contents")))?;
            match dt {
                Datatype::Fp32 => {
                    typed::<f32, f32>(&contents.fp32_contents, &dims, elements, name, Some)?
                }
                Datatype::Fp64 => {
                    typed::<f64, f64>(&contents.fp64_contents, &dims, elements, name, Some)?
                }
                Datatype::Bool => {
                    typed::<bool, bool>(&contents.bool_contents, &dims, elements, name, Some)?
                }
                Datatype::Int64 => {
                    typed::<i64, i64>(&contents.int64_contents, &dims, elements, name, Some)?
                }
                Datatype::Int32 => {
                    typed::<i32, i32>(&contents.int_contents, &dims, elements, name, Some)?
                }
                Datatype::Int16 => {
                    typed::<i16, i32>(&contents.int_contents, &dims, elements, name, |value| {
                        i16::try_from(value).ok()
                    })?
                }
                Datatype::Int8 => {
                    typed::<i8, i32>(&contents.int_contents, &dims, elements, name, |value| {
                        i8::try_from(value).ok()
                    })?
                }
                Datatype::Uint64 => {
                    typed::<u64, u64>(&contents.uint64_contents, &dims, elements, name, Some)?
                }
                Datatype::Uint32 => {
                    typed::<u32, u32>(&contents.uint_contents, &dims, elements, name, Some)?
                }
                Datatype::Uint16 => {
                    typed::<u16, u32>(&contents.uint_contents, &dims, elements, name, |value| {
                        u16::try_from(value).ok()
                    })?
                }
                Datatype::Uint8 => {
                    typed::<u8, u32>(&contents.uint_contents, &dims, elements, name, |value| {
                        u8::try_from(value).ok()
                    })?
                }
                Datatype::Fp16 => {
                    return Err(BadRequest(format!(
                        "input '{name}': FP16 has no typed contents; send raw_input_contents"
                    )));
                }
                // `check_input` refuses BYTES before this.
                Datatype::Bytes => {
                    return Err(BadRequest(format!(
                        "input '{name}': unsupported datatype 'BYTES'"
                    )));
                }
            }
        };
        slots[ix] = Some(tensor);
    }
    slots
        .into_iter()
        .zip(&server.signature.inputs)
        .map(|(t, spec)| t.ok_or_else(|| BadRequest(format!("missing input '{}'", spec.name))))
        .collect()
}

fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::Unavailable => "UNAVAILABLE",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::Internal => "INTERNAL",
        _ => "OTHER",
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _req: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _req: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.server.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        self.check_auth(&req)?;
        let r = req.into_inner();
        self.server
            .check_model(&r.name, Self::version(&r.version))?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.server.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _req: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "tractor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["feedback".into(), "explain".into()],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.check_auth(&req)?;
        let r = req.into_inner();
        let s = &self.server;
        s.check_model(&r.name, Self::version(&r.version))?;
        let meta = |t: &tractor_model::TensorSpec| model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().into(),
            shape: t.shape.clone(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: s.name.clone(),
            versions: vec![s.version.clone()],
            platform: s.platform.into(),
            inputs: s.signature.inputs.iter().map(meta).collect(),
            outputs: s.signature.outputs.iter().map(meta).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let start = Instant::now();
        let metrics = &self.server.metrics;
        metrics.in_flight.inc();
        // Sampled only once authenticated, as REST's auth layer runs before its handler.
        let mut capture = None;
        let result = match self.check_auth(&req) {
            Ok(()) => {
                capture = self
                    .server
                    .payload_log
                    .as_ref()
                    .and_then(|log| log.begin(PROTOCOL_GRPC));
                self.infer(req.into_inner(), capture.as_mut()).await
            }
            Err(e) => Err(e),
        };
        metrics.in_flight.dec();
        let code = result
            .as_ref()
            .map(|_| Code::Ok)
            .unwrap_or_else(|s| s.code());
        metrics.observe_request("grpc", code_label(code), start.elapsed().as_secs_f64());
        if let Some(capture) = capture {
            let error = result.as_ref().err().map(|s| s.message().to_owned());
            capture.finish(code_label(code), error);
        }
        result.map(Response::new)
    }
}

/// Settings of the gRPC front end.
pub struct GrpcConfig {
    /// Largest request message accepted.
    pub max_message_bytes: usize,
    /// Bearer token required on model calls, when set.
    pub auth_token: Option<String>,
    /// Serve over TLS with this identity, when set.
    pub identity: Option<tonic::transport::Identity>,
}

/// Serve gRPC on `listener` until `shutdown` resolves, letting in-flight calls finish. With a revision, every
/// response carries it as metadata ([`crate::revision::layer`]).
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    config: GrpcConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let GrpcConfig {
        max_message_bytes,
        auth_token,
        identity,
    } = config;
    let stamp = crate::revision::layer::<tonic::body::Body>(server.revision.as_ref());
    let svc = GrpcInferenceServiceServer::new(Service::new(server, auth_token))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .layer(stamp)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataMap;
    use tractor_api::names::HEADER_REVISION;

    use super::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use super::*;
    use crate::testing::{self, MODEL};

    const REVISION: &str = "3f9a1c0b7e";

    /// A gRPC server on a loopback port for the test's lifetime, and a client of it.
    async fn client(
        revision: Option<&str>,
    ) -> (
        GrpcInferenceServiceClient<tonic::transport::Channel>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let prepared = testing::prepared(revision);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = GrpcConfig {
            max_message_bytes: prepared.rest.max_body_bytes,
            auth_token: None,
            identity: None,
        };
        tokio::spawn(serve(prepared.server, listener, config, async {
            let _ = stopped.await;
        }));
        let client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        (client, stop)
    }

    fn infer_request(model: &str) -> ModelInferRequest {
        ModelInferRequest {
            model_name: model.into(),
            inputs: vec![InferInputTensor {
                name: "X".into(),
                datatype: "FP32".into(),
                shape: vec![1, 30],
                contents: Some(InferTensorContents {
                    fp32_contents: testing::row(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn revision_of(metadata: &MetadataMap) -> Option<&str> {
        metadata
            .get(HEADER_REVISION)
            .map(|v| v.to_str().expect("ascii"))
    }

    #[tokio::test]
    async fn every_response_carries_the_configured_revision() {
        let (mut client, _stop) = client(Some(REVISION)).await;
        let ok = client
            .model_infer(infer_request(MODEL))
            .await
            .expect("infer");
        assert_eq!(revision_of(ok.metadata()), Some(REVISION));
        assert_eq!(ok.get_ref().model_version, "1");
        let live = client
            .server_live(ServerLiveRequest {})
            .await
            .expect("live");
        assert_eq!(revision_of(live.metadata()), Some(REVISION));
        let unknown = client
            .model_infer(infer_request("nope"))
            .await
            .expect_err("unknown model");
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(revision_of(unknown.metadata()), Some(REVISION));
        let bad = client
            .model_metadata(ModelMetadataRequest {
                name: MODEL.into(),
                version: REVISION.into(),
            })
            .await
            .expect_err("the revision is no version");
        assert_eq!(bad.code(), Code::NotFound);
        assert_eq!(revision_of(bad.metadata()), Some(REVISION));
    }

    #[tokio::test]
    async fn without_a_revision_no_response_carries_one() {
        let (mut client, _stop) = client(None).await;
        let ok = client
            .model_infer(infer_request(MODEL))
            .await
            .expect("infer");
        assert_eq!(revision_of(ok.metadata()), None);
        let unknown = client
            .model_infer(infer_request("nope"))
            .await
            .expect_err("unknown model");
        assert_eq!(revision_of(unknown.metadata()), None);
    }
}
