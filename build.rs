//! Build script: compiles the kernel language's lalrpop grammar into OUT_DIR.

fn main() {
    lalrpop::Configuration::new()
        .emit_rerun_directives(true)
        .set_in_dir("compiler")
        .process()
        .expect("the lalrpop grammar under compiler/ must compile");
}
