//! Choosing the int8 model: every candidate (range method × where the first convolution
//! runs) measured against the fp32 model on validation images, the closest kept, and the
//! reason recorded as data ([`ChosenBy`]) that manifests and reports print.

use std::fmt;

use serde::Serialize;

use crate::ranges::RangeMethod;
use crate::validate::Agreement;

/// One candidate (range method, first conv's precision) and how it did on the
/// validation images.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// The range method's label (`mse`, `percentile-99.99`, `minmax`).
    pub method: String,
    /// Nodes kept in fp32 for this candidate (beyond the ops that are always fp32).
    pub fp32_nodes: Vec<String>,
    /// How it did against fp32 on the validation images; `None` when there were none.
    pub validation: Option<Agreement>,
}

/// How the range method (and the first convolution's precision) was chosen. Its
/// [`fmt::Display`] is the sentence manifests record as `chosen_by`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ChosenBy {
    /// The one method given; no validation images to compare on.
    Given,
    /// The candidate with the lowest mean KL divergence from the fp32 model's softmax on
    /// `validation_images` training images, among the range methods `tried`.
    LowestKl {
        /// Validation images the candidates were compared on.
        validation_images: usize,
        /// The range methods tried, by label.
        tried: Vec<String>,
        /// How the first convolution's precision was settled, when both were tried.
        first_conv: Option<FirstConvChoice>,
    },
}

/// How the first convolution's precision was settled when both were tried.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum FirstConvChoice {
    /// Int8, because its output feeds integer ops directly and the int8 candidate's
    /// validation top-1 is within the budget (pp) of the fp32 model's.
    Int8Chains {
        /// The first convolution's node name.
        node: String,
        /// The int8 candidate's validation top-1, percent.
        top1_int8: f64,
        /// The fp32 model's validation top-1, percent.
        top1_fp32: f64,
        /// The largest drop allowed, percentage points.
        budget_pp: f64,
    },
    /// Whichever of the int8 and fp32 candidates was closer to fp32.
    Closer {
        /// The first convolution's node name.
        node: String,
    },
}

impl fmt::Display for ChosenBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (images, tried, first_conv) = match self {
            ChosenBy::Given => return f.write_str("given (--method), no validation"),
            ChosenBy::LowestKl {
                validation_images,
                tried,
                first_conv,
            } => (validation_images, tried, first_conv),
        };
        write!(
            f,
            "lowest mean KL divergence from the fp32 model's softmax on {images} other training \
             images (the next {images} of the same shuffle), among {}",
            tried.join(", ")
        )?;
        match first_conv {
            None => Ok(()),
            Some(FirstConvChoice::Int8Chains {
                node,
                top1_int8,
                top1_fp32,
                budget_pp,
            }) => write!(
                f,
                ", with the first convolution ({node}) in int8: its output feeds \
                 integer ops directly (no fp32 convolution and QuantizeLinear before \
                 them), and the validation top-1 is {top1_int8:.2} % against fp32's \
                 {top1_fp32:.2} % (budget {budget_pp} pp)"
            ),
            Some(FirstConvChoice::Closer { node }) => write!(
                f,
                ", each with the first convolution ({node}) in int8 and in fp32"
            ),
        }
    }
}

/// The candidate of one variant closest to fp32 on the validation images.
#[derive(Clone, Debug)]
pub(crate) struct Closest {
    pub method: RangeMethod,
    pub bytes: Vec<u8>,
    pub agreement: Agreement,
}

impl Closest {
    /// Keeps the closer (lower mean KL) of `best` and a new candidate.
    pub fn keep_closer(best: &mut Option<Closest>, candidate: Closest) {
        if best
            .as_ref()
            .is_none_or(|c| candidate.agreement.mean_kl < c.agreement.mean_kl)
        {
            *best = Some(candidate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sentences manifests record are unchanged by their being data now.
    #[test]
    fn chosen_by_reads_as_the_manifests_record_it() {
        let tried = vec!["mse".to_string(), "minmax".to_string()];
        let closer = ChosenBy::LowestKl {
            validation_images: 20,
            tried: tried.clone(),
            first_conv: Some(FirstConvChoice::Closer {
                node: "stem.conv".into(),
            }),
        };
        assert_eq!(
            closer.to_string(),
            "lowest mean KL divergence from the fp32 model's softmax on 20 other training images \
             (the next 20 of the same shuffle), among mse, minmax, each with the first \
             convolution (stem.conv) in int8 and in fp32"
        );
        let chains = ChosenBy::LowestKl {
            validation_images: 20,
            tried,
            first_conv: Some(FirstConvChoice::Int8Chains {
                node: "stem.conv".into(),
                top1_int8: 89.1,
                top1_fp32: 88.9,
                budget_pp: 0.3,
            }),
        };
        assert!(chains.to_string().ends_with(
            "with the first convolution (stem.conv) in int8: its output feeds integer ops \
             directly (no fp32 convolution and QuantizeLinear before them), and the validation \
             top-1 is 89.10 % against fp32's 88.90 % (budget 0.3 pp)"
        ));
        assert_eq!(
            ChosenBy::Given.to_string(),
            "given (--method), no validation"
        );
    }
}
