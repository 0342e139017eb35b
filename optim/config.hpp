// Optimizer configuration: the [optim] keys, their defaults, and parsing from JSON (trace hparams) with
// errors that name the key.
#pragma once

#include "optim/distributed/plan.hpp"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace orthoshard {

enum class RuleKind { AdamW, Muon, NorMuon, Conda, CondaPlain };  // CondaPlain: Conda without projection
std::string_view rule_name(RuleKind k);

enum class MatrixScale { Keller, Moonlight, None, Paper };  // Paper: NorMuon's 0.2·sqrt(mn)/‖Ô‖_F
enum class CondaProjType { Std, ReverseStd, Left, Right };

struct AdamHparams {
  double lr = 3e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-10, weight_decay = 0.0;
};

struct OptimConfig {
  std::string name = "muon";  // adamw | muon | normuon | conda
  double lr = 0.02;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2_adam = 0.999;  // `betas` (AdamW when name = adamw, Conda)
  double eps = 1e-8;
  // Muon / NorMuon
  double momentum = 0.95;
  bool nesterov = true;
  int ns_steps = 5;
  MatrixScale scale = MatrixScale::Keller;
  double beta2 = 0.95;  // NorMuon row second moment
  // Conda
  int update_proj_gap = 500;
  double conda_scale = 0.25;
  CondaProjType proj_type = CondaProjType::Std;
  bool correct_bias = true;
  // Distributed orthogonalization: owner exchange, Gram-sharded NS for tall matrices, or chosen per matrix.
  OrthoScheme ortho_scheme = OrthoScheme::Auto;
  // Auxiliary AdamW for parameters the matrix rule does not take.
  AdamHparams adam;
  // Routing overrides: glob patterns on parameter names.
  std::vector<std::string> matrix_params;  // forced to the matrix rule (must be >= 2-D)
  std::vector<std::string> adam_params;    // forced to AdamW

  RuleKind matrix_rule() const;  // the rule 2-D hidden weights take under `name`
};

// Reads the keys of an [optim] table given as JSON. Unknown keys and wrong types are errors naming
// the key; `ignore` lists keys to skip (e.g. trace metadata).
OptimConfig optim_config_from_json(const nlohmann::json& j, const std::vector<std::string>& ignore = {});

}  // namespace orthoshard
