//! A Rust gRPC client (tonic, the committed generated code) against `tractor serve`: every RPC of
//! `inference.GRPCInferenceService`, typed and raw contents, agreement with onnxruntime on the whole digits
//! test split, and TLS with a bearer token on both ports (HTTPS REST and gRPC over TLS).

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tractor_e2e::serve::{Serve, Split, TestPki, argmax};
use tractor_serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use tractor_serve::grpc::proto::model_infer_request::InferInputTensor;
use tractor_serve::grpc::proto::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A request for `rows` rows of `split` starting at `first`, as raw little-endian bytes or typed FP32.
fn infer_request(
    model: &str,
    split: &Split,
    first: usize,
    rows: usize,
    raw: bool,
) -> ModelInferRequest {
    let values: Vec<f32> = (first..first + rows)
        .flat_map(|i| split.row(i).iter().copied())
        .collect();
    let mut input = InferInputTensor {
        name: split.input.clone(),
        datatype: "FP32".into(),
        shape: vec![rows as i64, split.features as i64],
        ..Default::default()
    };
    let mut raw_input_contents = Vec::new();
    if raw {
        raw_input_contents.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    } else {
        input.contents = Some(InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        });
    }
    ModelInferRequest {
        model_name: model.into(),
        id: format!("rows-{first}-{rows}"),
        inputs: vec![input],
        raw_input_contents,
        ..Default::default()
    }
}

/// Output `name` as f32 values, whether the server answered with raw or typed contents.
fn output_f32(resp: &ModelInferResponse, name: &str) -> anyhow::Result<(Vec<i64>, Vec<f32>)> {
    let (i, out) = resp
        .outputs
        .iter()
        .enumerate()
        .find(|(_, o)| o.name == name)
        .with_context(|| format!("no output {name} in {:?}", resp.outputs))?;
    if out.datatype != "FP32" {
        bail!("{name}: datatype {}", out.datatype);
    }
    let values = if let Some(raw) = resp.raw_output_contents.get(i) {
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        out.contents
            .as_ref()
            .context("neither raw nor typed contents")?
            .fp32_contents
            .clone()
    };
    Ok((out.shape.clone(), values))
}

#[test]
fn every_rpc_and_agreement_with_onnxruntime_over_plain_grpc() -> anyhow::Result<()> {
    let split = Split::load("digits_mlp")?;
    let serve = Serve::start("digits_mlp.onnx", "digits", &[])?;
    let reference = split
        .reference
        .get("probabilities")
        .context("reference probabilities")?;
    let rt = runtime();
    rt.block_on(async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", serve.grpc_port))?
            .connect()
            .await?;
        let mut client = GrpcInferenceServiceClient::new(channel);
        assert!(
            client
                .server_live(ServerLiveRequest {})
                .await?
                .into_inner()
                .live
        );
        assert!(
            client
                .server_ready(ServerReadyRequest {})
                .await?
                .into_inner()
                .ready
        );
        let ready = client
            .model_ready(ModelReadyRequest {
                name: "digits".into(),
                version: String::new(),
            })
            .await?
            .into_inner();
        assert!(ready.ready);
        let meta = client
            .server_metadata(ServerMetadataRequest {})
            .await?
            .into_inner();
        assert!(!meta.version.is_empty(), "{meta:?}");
        let model = client
            .model_metadata(ModelMetadataRequest {
                name: "digits".into(),
                version: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(model.name, "digits");
        assert_eq!(model.inputs.len(), 1, "{model:?}");
        assert_eq!(model.inputs[0].name, split.input);
        assert_eq!(model.inputs[0].shape, vec![-1, split.features as i64]);
        let unknown = client
            .model_metadata(ModelMetadataRequest {
                name: "nope".into(),
                version: String::new(),
            })
            .await
            .expect_err("unknown model");
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

        // The whole split: raw contents in batches of 50, typed contents one row at a time for a tenth.
        let mut answered = Vec::with_capacity(split.rows());
        let mut max_abs = 0f64;
        let batch = 50;
        for first in (0..split.rows()).step_by(batch) {
            let rows = batch.min(split.rows() - first);
            let resp = client
                .model_infer(infer_request("digits", &split, first, rows, true))
                .await?
                .into_inner();
            assert_eq!(resp.id, format!("rows-{first}-{rows}"));
            let (shape, probs) = output_f32(&resp, "probabilities")?;
            assert_eq!(shape, vec![rows as i64, 10]);
            // The receipt names one predicted class per row, as over REST.
            let receipt = match resp
                .parameters
                .get("tractor_receipt")
                .and_then(|p| p.parameter_choice.as_ref())
            {
                Some(
                    tractor_serve::grpc::proto::infer_parameter::ParameterChoice::StringParam(r),
                ) => r.clone(),
                other => bail!("no string tractor_receipt parameter: {other:?}"),
            };
            let receipt =
                tractor_serve::receipt::Receipt::parse(&receipt).map_err(anyhow::Error::msg)?;
            assert_eq!(
                (receipt.model.as_str(), receipt.predicted.len()),
                ("digits", rows)
            );
            assert!(matches!(
                receipt.predicted,
                tractor_serve::receipt::Predicted::Classes(_)
            ));
            for (offset, row) in probs.chunks(10).enumerate() {
                let row_ix = first + offset;
                let want = &reference.data[row_ix * 10..(row_ix + 1) * 10];
                for (got, expected) in row.iter().zip(want) {
                    max_abs = max_abs.max((f64::from(*got) - expected).abs());
                }
                let row64: Vec<f64> = row.iter().map(|v| f64::from(*v)).collect();
                answered.push(argmax(&row64));
            }
        }
        let agreement = split
            .argmax_agreement("probabilities", &answered)
            .context("digits over gRPC, raw contents")?;
        eprintln!("digits over gRPC, raw contents: {agreement}; max |Δp| {max_abs:.2e}");
        assert!(max_abs < 1e-4, "max |Δp| {max_abs}");
        let mut typed = Vec::new();
        for row_ix in (0..split.rows()).step_by(10) {
            let resp = client
                .model_infer(infer_request("digits", &split, row_ix, 1, false))
                .await?
                .into_inner();
            let (_, probs) = output_f32(&resp, "probabilities")?;
            let row64: Vec<f64> = probs.iter().map(|v| f64::from(*v)).collect();
            typed.push((row_ix, argmax(&row64)));
        }
        split
            .argmax_agreement_at("probabilities", typed)
            .context("digits over gRPC, typed contents")?;

        // A malformed request is INVALID_ARGUMENT, and the server keeps answering afterwards.
        let mut bad = infer_request("digits", &split, 0, 1, true);
        bad.raw_input_contents[0].truncate(7);
        let err = client.model_infer(bad).await.expect_err("short raw input");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            client
                .server_ready(ServerReadyRequest {})
                .await?
                .into_inner()
                .ready
        );
        anyhow::Ok(())
    })
}

#[test]
fn tls_and_bearer_token_on_both_ports() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::create(dir.path())?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n")?;
    let cert = pki.cert.to_string_lossy().into_owned();
    let key = pki.key.to_string_lossy().into_owned();
    let token = token_file.to_string_lossy().into_owned();
    let serve = Serve::start_tls(
        "digits_mlp.onnx",
        "digits",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth-token-file",
            &token,
        ],
        &pki.ca_pem,
    )?;
    let split = Split::load("digits_mlp")?;
    let ref_argmax = split.reference_argmax("probabilities").context("argmax")?;

    // HTTPS REST: trusted through the test CA; the token is needed on model routes only.
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem)?)
        .build()?;
    let body = serde_json::json!({
        "inputs": [{"name": split.input, "datatype": "FP32", "shape": [1, split.features], "data": split.row(0)}]
    });
    let unauthorized = https.post(serve.model_url("/infer")).json(&body).send()?;
    assert_eq!(unauthorized.status(), 401);
    let resp: serde_json::Value = https
        .post(serve.model_url("/infer"))
        .bearer_auth("s3cret-token")
        .json(&body)
        .send()?
        .error_for_status()?
        .json()?;
    let probs: Vec<f64> = resp["outputs"]
        .as_array()
        .context("outputs")?
        .iter()
        .find(|o| o["name"] == "probabilities")
        .context("probabilities")?["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert_eq!(argmax(&probs), ref_argmax[0]);

    // Plain HTTP to the TLS port gets no HTTP answer, and an untrusting client refuses the certificate.
    let plain = reqwest::blocking::Client::new()
        .get(serve.http.replace("https://", "http://") + "/v2/health/ready")
        .send();
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP must not be served on the TLS port"
    );
    let untrusting = reqwest::blocking::Client::new()
        .get(format!("{}/v2/health/live", serve.http))
        .send();
    assert!(
        untrusting.is_err(),
        "a client without the CA must refuse the certificate"
    );

    // gRPC over TLS, same CA, token in the metadata.
    let rt = runtime();
    rt.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://localhost:{}", serve.grpc_port))?
            .tls_config(tls)?
            .connect()
            .await?;
        let mut client = GrpcInferenceServiceClient::new(channel);
        assert!(
            client
                .server_live(ServerLiveRequest {})
                .await?
                .into_inner()
                .live
        );
        let denied = client
            .model_infer(infer_request("digits", &split, 0, 1, true))
            .await
            .expect_err("no token");
        assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied:?}");
        let mut req = tonic::Request::new(infer_request("digits", &split, 0, 1, true));
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret-token".parse()?);
        let resp = client.model_infer(req).await?.into_inner();
        let (_, probs) = output_f32(&resp, "probabilities")?;
        let row64: Vec<f64> = probs.iter().map(|v| f64::from(*v)).collect();
        assert_eq!(argmax(&row64), ref_argmax[0]);
        anyhow::Ok(())
    })?;

    // A plaintext gRPC client cannot talk to the TLS port.
    rt.block_on(async {
        let plain = async {
            let channel = Channel::from_shared(format!("http://127.0.0.1:{}", serve.grpc_port))?
                .connect()
                .await?;
            let mut client = GrpcInferenceServiceClient::new(channel);
            client.server_live(ServerLiveRequest {}).await?;
            anyhow::Ok(())
        };
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), plain).await;
        assert!(
            !matches!(result, Ok(Ok(()))),
            "plaintext gRPC must not be served on the TLS port"
        );
    });
    Ok(())
}

#[test]
fn bad_tls_files_stop_the_server_with_the_file_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )?;
    std::fs::write(&key, "nothing")?;
    let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
    let err = Serve::start(
        "digits_mlp.onnx",
        "digits",
        &["--tls-cert", &c, "--tls-key", &k],
    )
    .err()
    .context("the server must refuse a broken certificate")?
    .to_string();
    assert!(err.contains("tls.crt"), "{err}");
    // Only one of the pair is a usage error from the command line itself.
    let err = Serve::start("digits_mlp.onnx", "digits", &["--tls-cert", &c])
        .err()
        .context("--tls-cert alone must be refused")?
        .to_string();
    assert!(err.contains("--tls-key"), "{err}");
    Ok(())
}
