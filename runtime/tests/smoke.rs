mod common;
use common::*;

#[test]
fn exp_example() {
    let text = "\
.hbm 65536
.tensor x input f32 [128, 64] @0
.tensor y output f32 [128, 64] @32768

.stream scalar
    wait(s0>=1) activate out=sbuf.f32[0:128, 256; 64:1], src=sbuf.f32[0:128, 0; 64:1], func=exp, scale=1.0, bias=0.0, accum=none signal(s1)
    end

.stream dma0
    dma dst=sbuf.f32[0:128, 0; 64:1], src=hbm.f32[0; 128:64, 64:1] signal(s0)
    wait(s1>=1) dma dst=hbm.f32[32768; 128:64, 64:1], src=sbuf.f32[0:128, 256; 64:1]
    end
";
    let x: Vec<f32> = (0..128 * 64).map(|i| (i % 17) as f32 * 0.1).collect();
    let (report, loaded) = run(text, &[("x", &x)]);
    let y = loaded.read("y").unwrap();
    let want: Vec<f32> = x
        .iter()
        .map(|&v| runtime::numeric::act(isa::ActFunc::Exp, v))
        .collect();
    assert_bits_eq(&y, &want, "exp");
    println!("{}", report.summary());
    println!("{:#?}", report.events);
}
