// Parsing of optimizer hyperparameters, shared by `replay` (trace JSON) and the trainer's [optim] table.
#include "optim/config.hpp"

#include "runtime/core/error.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace orthoshard {

std::string_view rule_name(RuleKind k) {
  switch (k) {
    case RuleKind::AdamW: return "adamw";
    case RuleKind::Muon: return "muon";
    case RuleKind::NorMuon: return "normuon";
    case RuleKind::Conda: return "conda";
    case RuleKind::CondaPlain: return "conda(unprojected)";
  }
  return "?";
}

RuleKind OptimConfig::matrix_rule() const {
  if (name == "muon") return RuleKind::Muon;
  if (name == "normuon") return RuleKind::NorMuon;
  if (name == "conda") return RuleKind::Conda;
  return RuleKind::AdamW;
}

namespace {

double num(const nlohmann::json& v, const std::string& key) {
  if (!v.is_number()) throw UsageError("optim." + key + ": expected a number, got " + v.dump());
  return v.get<double>();
}

int integer(const nlohmann::json& v, const std::string& key) {
  if (!v.is_number_integer()) throw UsageError("optim." + key + ": expected an integer, got " + v.dump());
  return v.get<int>();
}

std::pair<double, double> pair(const nlohmann::json& v, const std::string& key) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
    throw UsageError("optim." + key + ": expected two numbers [beta1, beta2], got " + v.dump());
  return {v[0].get<double>(), v[1].get<double>()};
}

std::string str(const nlohmann::json& v, const std::string& key) {
  if (!v.is_string()) throw UsageError("optim." + key + ": expected a string, got " + v.dump());
  return v.get<std::string>();
}

std::vector<std::string> strings(const nlohmann::json& v, const std::string& key) {
  std::vector<std::string> out;
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) throw UsageError("optim." + key + ": expected a list of name patterns, got " + v.dump());
  for (const auto& e : v) out.push_back(str(e, key));
  return out;
}

void check_beta(double b, const std::string& key) {
  if (!(b >= 0.0 && b < 1.0)) throw UsageError(fmt::format("optim.{}: {} is not in [0, 1)", key, b));
}

}  // namespace

OptimConfig optim_config_from_json(const nlohmann::json& j, const std::vector<std::string>& ignore) {
  if (!j.is_object()) throw UsageError("optimizer hyperparameters must be a JSON object, got " + j.dump());
  OptimConfig c;
  if (j.contains("name")) c.name = str(j["name"], "name");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    if (std::find(ignore.begin(), ignore.end(), k) != ignore.end() || k == "name") continue;
    if (k == "lr") c.lr = num(v, k);
    else if (k == "weight_decay") c.weight_decay = num(v, k);
    else if (k == "betas") std::tie(c.beta1, c.beta2_adam) = pair(v, k);
    else if (k == "eps") c.eps = num(v, k);
    else if (k == "momentum") c.momentum = num(v, k);
    else if (k == "nesterov") {
      if (!v.is_boolean()) throw UsageError("optim.nesterov: expected true or false, got " + v.dump());
      c.nesterov = v.get<bool>();
    } else if (k == "ns_steps") c.ns_steps = integer(v, k);
    else if (k == "beta2") c.beta2 = num(v, k);
    else if (k == "scale") {
      if (v.is_number()) {
        c.conda_scale = v.get<double>();
      } else {
        const std::string s = str(v, k);
        if (s == "keller") c.scale = MatrixScale::Keller;
        else if (s == "moonlight") c.scale = MatrixScale::Moonlight;
        else if (s == "none") c.scale = MatrixScale::None;
        else if (s == "paper") c.scale = MatrixScale::Paper;
        else throw UsageError("optim.scale: '" + s + "' is not keller, moonlight, none, paper or a number (conda)");
      }
    } else if (k == "conda_scale") c.conda_scale = num(v, k);
    else if (k == "update_proj_gap") c.update_proj_gap = integer(v, k);
    else if (k == "proj_type") {
      const std::string s = str(v, k);
      if (s == "std") c.proj_type = CondaProjType::Std;
      else if (s == "reverse_std") c.proj_type = CondaProjType::ReverseStd;
      else if (s == "left") c.proj_type = CondaProjType::Left;
      else if (s == "right") c.proj_type = CondaProjType::Right;
      else throw UsageError("optim.proj_type: '" + s + "' is not std, reverse_std, left or right");
    } else if (k == "correct_bias") {
      if (!v.is_boolean()) throw UsageError("optim.correct_bias: expected true or false, got " + v.dump());
      c.correct_bias = v.get<bool>();
    } else if (k == "adam_lr") c.adam.lr = num(v, k);
    else if (k == "adam_betas") std::tie(c.adam.beta1, c.adam.beta2) = pair(v, k);
    else if (k == "adam_eps") c.adam.eps = num(v, k);
    else if (k == "adam_weight_decay") c.adam.weight_decay = num(v, k);
    else if (k == "ortho_scheme") c.ortho_scheme = parse_ortho_scheme(str(v, k));
    else if (k == "matrix_params") c.matrix_params = strings(v, k);
    else if (k == "adam_params") c.adam_params = strings(v, k);
    else throw UsageError("optim." + k + ": unknown key");
  }
  if (c.name != "adamw" && c.name != "muon" && c.name != "normuon" && c.name != "conda")
    throw UsageError("optim.name: '" + c.name + "' is not adamw, muon, normuon or conda");
  if (c.scale == MatrixScale::Paper && c.name != "normuon")
    throw UsageError("optim.scale: 'paper' is NorMuon's scaling; optim.name is " + c.name);
  if (c.ns_steps < 0) throw UsageError("optim.ns_steps must be >= 0");
  if (c.update_proj_gap < 1) throw UsageError("optim.update_proj_gap must be >= 1");
  check_beta(c.beta1, "betas[0]");
  check_beta(c.beta2_adam, "betas[1]");
  check_beta(c.momentum, "momentum");
  check_beta(c.beta2, "beta2");
  check_beta(c.adam.beta1, "adam_betas[0]");
  check_beta(c.adam.beta2, "adam_betas[1]");
  return c;
}

}  // namespace orthoshard
