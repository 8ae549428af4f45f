//! Body of the fuzz target `npy`: arbitrary bytes -> `runtime::npy::read_npy`. It must
//! never panic or allocate more than the input's size; an array it returns must be
//! consistent (its element count is the product of its shape, 0 when a dim is 0) and
//! survive conversion to a dtype of its width, writing as float32 and reading back
//! (integers: conversion to i32 and writing as int32).

/// Runs the target on one input.
pub fn fuzz_npy(data: &[u8]) {
    let Ok(array) = runtime::npy::read_npy(data) else {
        return;
    };
    // A zero dimension makes the array empty however large the others are (the reader
    // accepts that, though NumPy refuses shapes whose other dims overflow).
    let product = if array.shape.contains(&0) {
        Some(0)
    } else {
        array
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    };
    assert_eq!(
        product,
        Some(array.len() as u64),
        "element count of {:?}",
        array.shape
    );
    let _ = array.shape_string();
    let _ = array.dtype_name();
    let _ = array.round_to(isa::Dtype::Bf16);
    // Integers are read as `i32` (exactly, or an error naming a value that does not fit),
    // and written back as int32.
    if let runtime::npy::NpyData::Int { values, .. } = &array.data {
        match array.to_i32() {
            Ok(ints) => {
                let bytes = runtime::npy::write_npy_i32(&array.shape, &ints);
                let back = runtime::npy::read_npy(&bytes).expect("a written .npy reads back");
                assert_eq!(back.to_i32().expect("int32 fits i32"), ints);
            }
            Err(_) => assert!(values.iter().any(|&v| i32::try_from(v).is_err())),
        }
        return;
    }
    // Untyped data is read as the bits of a dtype of its width; bools as bools; every
    // other kind as f32.
    let dtype = match array.data {
        runtime::npy::NpyData::Bool(_) => isa::Dtype::Bool,
        runtime::npy::NpyData::Void1(_) => isa::Dtype::F8E4M3,
        runtime::npy::NpyData::Void2(_) => isa::Dtype::Bf16,
        _ => isa::Dtype::F32,
    };
    let values = array
        .round_to(dtype)
        .expect("a dtype of the data's width reads");
    let bytes = runtime::npy::write_npy(&array.shape, &values);
    let back = runtime::npy::read_npy(&bytes).expect("a written .npy reads back");
    assert_eq!(back.shape, array.shape);
    assert_eq!(back.len(), array.len());
}
