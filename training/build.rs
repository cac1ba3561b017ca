//! Embeds a RUNPATH to libtorch's folder so `train-zoo` runs without LD_LIBRARY_PATH.
//! torch-sys, a direct dependency, exports the folder as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // --enable-new-dtags writes RUNPATH (not RPATH), so LD_LIBRARY_PATH still wins:
        // the same binary runs on a GPU host whose torch lives elsewhere.
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{dir}");
    }
}
