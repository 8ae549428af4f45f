//! Embedding the Tessera runtime: a program built by hand from the ISA types (DMA a
//! `[4, 8]` f32 tensor into SBUF, `exp` on the Scalar engine, DMA the result back), encoded
//! to `.tbin` bytes, loaded, bound, run, and its outputs and cycle count printed.
//!
//! Run with `cargo run --example embed`.

use isa::{
    ActFunc, DmaAp, Dtype, Engine, HbmAp, Inst, Mem, Op, Preset, Program, Role, ScalarArg, Sync,
    TensorDecl, TileAp,
};
use runtime::{Machine, MachineConfig};

/// An instruction with waits and an optional signal.
fn inst(op: Op, waits: &[(u8, u32)], signal: Option<u8>) -> Inst {
    Inst {
        sync: Sync {
            waits: waits.iter().copied().collect(),
            signal,
        },
        op,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (rows, cols) = (4u64, 8u64);
    let bytes = rows * cols * 4;
    let mut program = Program::new(Preset::Default);
    program.hbm_size = 2 * bytes;
    for (name, role, offset) in [("x", Role::Input, 0), ("y", Role::Output, bytes)] {
        program.tensors.push(TensorDecl {
            name: name.into(),
            role,
            dtype: Dtype::F32,
            shape: vec![rows, cols],
            offset,
        });
    }
    // Partition p of the tile holds row p; the HBM side walks rows then columns.
    let tile = |offset: u32| {
        TileAp::new(
            Mem::Sbuf,
            Dtype::F32,
            0,
            rows as u8,
            offset,
            &[(cols as u32, 1)],
        )
    };
    let hbm = |offset: u64| {
        DmaAp::Hbm(HbmAp::new(
            Dtype::F32,
            offset,
            &[(rows, cols as i64), (cols, 1)],
        ))
    };
    let dma = Engine::Dma(0).index();
    program.streams[dma] = vec![
        inst(
            Op::Dma {
                dst: DmaAp::Tile(tile(0)),
                src: hbm(0),
            },
            &[],
            Some(0),
        ),
        inst(
            Op::Dma {
                dst: hbm(bytes),
                src: DmaAp::Tile(tile(256)),
            },
            &[(1, 1)],
            None,
        ),
        Inst::new(Op::End {}),
    ];
    program.streams[Engine::Scalar.index()] = vec![
        inst(
            Op::Activate {
                out: tile(256),
                src: tile(0),
                func: ActFunc::Exp,
                scale: ScalarArg::imm(1.0),
                bias: ScalarArg::imm(0.0),
                accum: None,
            },
            &[(0, 1)],
            Some(1),
        ),
        Inst::new(Op::End {}),
    ];

    // What a host would do with a compiled kernel: bytes in, outputs out.
    let tbin = isa::encode_program(&program);
    let machine = Machine::new(MachineConfig::default());
    let mut kernel = machine.load(&tbin)?;
    let x: Vec<f32> = (0..rows * cols).map(|i| i as f32 / 8.0).collect();
    kernel.bind("x", &x)?;
    let report = kernel.run()?;
    let y = kernel.read("y")?;
    for r in 0..rows as usize {
        let row: Vec<String> = y[r * cols as usize..(r + 1) * cols as usize]
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect();
        println!("y[{r}] = [{}]", row.join(", "));
    }
    println!(
        "total cycles: {} ({:.2} us)",
        report.total_cycles,
        report.seconds() * 1e6
    );
    print!("{}", report.summary());
    Ok(())
}
