//! Conformance with outputs of the authors' PyTorch code (HazyResearch/fly), float64.
use crate::common;
use common::*;
use monarch::ndarray::Ix2;
use monarch::Monarch;

fn check_multiply(name: &str) {
    let f = fixture(name);
    let x = t2(&f["inputs"]["x"]);
    let w1 = t3(&f["inputs"]["w1"]);
    let w2 = t3(&f["inputs"]["w2"]);
    let g = t2(&f["inputs"]["grad_out"]);
    let m = Monarch::from_factors(w1, w2).unwrap();
    let out = m.matmul(x.view()).unwrap();
    assert_close(
        out.as_slice().unwrap(),
        t2(&f["outputs"]["out"]).as_slice().unwrap(),
        1e-12,
        "out",
    );
    let dense = m.to_dense();
    assert_close(
        dense.as_slice().unwrap(),
        t2(&f["outputs"]["dense"]).as_slice().unwrap(),
        1e-12,
        "dense",
    );
    let gr = m.vjp(x.view(), g.view()).unwrap();
    assert_close(
        gr.x.as_slice().unwrap(),
        t2(&f["outputs"]["grad_x"]).as_slice().unwrap(),
        1e-12,
        "grad_x",
    );
    assert_close(
        gr.w1.as_slice().unwrap(),
        t3(&f["outputs"]["grad_w1"]).as_slice().unwrap(),
        1e-12,
        "grad_w1",
    );
    assert_close(
        gr.w2.as_slice().unwrap(),
        t3(&f["outputs"]["grad_w2"]).as_slice().unwrap(),
        1e-12,
        "grad_w2",
    );
}

#[test]
fn multiply_square_matches_reference() {
    check_multiply("mul_sq_n16_b4.json");
}

#[test]
fn multiply_rectangular_monarchlinear_matches_reference() {
    check_multiply("mul_rect_64to128_b4_monarchlinear.json");
}

fn check_projection(name: &str, k: usize, l: usize) {
    let f = fixture(name);
    let a = t2(&f["inputs"]["M"]);
    let rho = f["dims"]["rank_per_slice"].as_u64().unwrap() as usize;
    let p = Monarch::project_with_error(a.view(), k, l, rho).unwrap();
    let m_hat = t2(&f["outputs"]["M_hat"]);
    assert_close(
        p.monarch.to_dense().as_slice().unwrap(),
        m_hat.as_slice().unwrap(),
        1e-10,
        "M_hat",
    );
    let fro = f["outputs"]["fro_err"].as_f64().unwrap();
    assert!(
        (p.error - fro).abs() <= 1e-10 * fro.max(1.0),
        "fro_err {} vs {}",
        p.error,
        fro
    );
    let w1_shape: Vec<usize> = f["dims"]["w1_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(p.monarch.w1().shape(), &w1_shape[..]);
    let _ = Ix2(0, 0);
}

#[test]
fn projection_square_matches_reference() {
    check_projection("proj_sq_n16.json", 4, 4);
}

#[test]
fn projection_rectangular_matches_reference() {
    check_projection("proj_rect_24x16_simple_b4_b4.json", 4, 4);
}
