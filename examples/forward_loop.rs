//! Runs forward passes in a loop, for profiling (`valgrind --tool=callgrind`).
use feedlens::{Config, Input, Model, Run};

fn main() -> feedlens::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let model = Model::init(Config::new(4, 64, 4, 32, 32), 0)?;
    let rows: Vec<Vec<u32>> = (0..32)
        .map(|b| (0..18).map(|i| (i * 7 + b) % 32).collect())
        .collect();
    let ids = model.ids_tensor(&rows)?;
    let t = std::time::Instant::now();
    for _ in 0..n {
        model.forward(&Input::Ids(ids.clone()), &Run::default())?;
    }
    println!(
        "{:.3} ms per forward",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    Ok(())
}
