// The model-family interface (in the spirit of torchtitan's TrainSpec): everything the trainer, the checkpoint
// code and the tools need to know about a model, so that none of them names a particular one. A family (GPT-2,
// ...) is registered by its `arch` name (models/families.cpp) and builds Models from the [model] section or from
// a checkpoint's /model attributes. A Model describes
//   - its units (embedding, blocks, head: what the FSDP engine gathers one at a time) and which parameters a
//     unit reads from another unit (tied weights);
//   - each parameter's role (embedding, head, hidden matrix, vector), which the optimizer routes by;
//   - its initial values, by rows (from the config and seed, or from a file in one of its formats);
//   - its checkpoint attributes and the formats its weights export to;
//   - forward and backward per unit, on each backend (UnitRunner; the GPU runners: models/device_runner.hpp).
#pragma once

#include "runtime/core/param_role.hpp"
#include "runtime/core/tensor.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace orthoshard {

// [model]: which family, where its weights come from, and its shape when they are initialized from a seed.
struct ModelSpec {
  std::string init_from;      // a model file in one of the family's formats; "" = random init
  std::string arch = "gpt2";  // the family (model_family_names())
  std::int64_t L = 12;        // transformer blocks
  std::int64_t C = 768;       // channels (C % NH == 0)
  std::int64_t NH = 12;       // attention heads
  std::int64_t V = 50257;     // vocabulary
  std::int64_t Vp = 50304;    // padded vocabulary, Vp >= V (rows of the embedding; padding never enters the loss)
  std::int64_t maxT = 1024;   // context length
  std::uint64_t seed = 1337;  // random init
  // LLaMA only:
  std::int64_t NKV = 0;         // key/value heads; 0 = NH (no grouping)
  std::int64_t FF = 0;          // SwiGLU intermediate size; 0 = 8C/3 rounded up to a multiple of 256
  double norm_eps = 1e-5;       // RMSNorm epsilon
  double rope_theta = 10000.0;  // rotary base
  bool tie_embeddings = false;  // the head is the token embedding
  std::string origin;         // the configuration file it came from, for errors; "" when built in code
  bool operator==(const ModelSpec& o) const {
    return init_from == o.init_from && arch == o.arch && L == o.L && C == o.C && NH == o.NH && V == o.V &&
           Vp == o.Vp && maxT == o.maxT && seed == o.seed && NKV == o.NKV && FF == o.FF && norm_eps == o.norm_eps &&
           rope_theta == o.rope_theta && tie_embeddings == o.tie_embeddings;
  }
};

// ---------------------------------------------------------------- units

enum class UnitKind { Embedding, Block, Head };

// A unit: the parameters the FSDP engine gathers together, in forward order.
struct ModelUnit {
  std::string name;  // "embedding", "h.3", "head"
  UnitKind kind = UnitKind::Block;
  int layer = -1;                   // blocks: 0 .. L-1
  std::vector<ParamInfo> params;    // the parameters this unit owns (global shapes, roles)
  std::vector<std::string> reads;   // parameters of other units its forward and backward read (tied weights)
  bool backward_reads_params = true;  // false: its backward needs only gradients (an embedding lookup)
};

// Any name -> tensor lookup (views into an engine's gathered buffers, a parameter struct, ...).
using TensorLookup = std::function<Tensor(const std::string& name)>;
using NamedTensor = std::pair<std::string, Tensor>;

// ---------------------------------------------------------------- one backend's forward and backward

// Runs a model's units on one backend, for batches of B sequences of T tokens. Parameter and gradient tensors
// come through lookups (host f32 tensors on the CPU; device tensors of the compute dtype on the GPU); gradients
// accumulate (+=), so K micro-batches with grad_scale = 1/K add up to the gradient of the mean loss.
class UnitRunner {
 public:
  virtual ~UnitRunner() = default;
  // Sizes the activations for up to `micro_batches` micro-batches of (B, T) per step.
  virtual void set_batch(std::int64_t B, std::int64_t T, int micro_batches) = 0;
  // The next micro-batch's tokens: host i32 (B, T) inputs and targets (checked against the vocabulary).
  virtual void set_tokens(const Tensor& inputs, const Tensor& targets) = 0;
  // Forward of unit u; the head also computes the micro-batch's mean loss (queued on a GPU).
  virtual void forward(const ModelUnit& unit, const TensorLookup& params) = 0;
  // Backward of unit u, in reverse unit order, of grad_scale · mean loss.
  virtual void backward(const ModelUnit& unit, const TensorLookup& params, const TensorLookup& grads,
                        double grad_scale) = 0;
  // The sum of the mean losses of the micro-batches since the last call (waits for the device).
  virtual double take_loss_sum() = 0;
  virtual std::uint64_t activation_bytes() const { return 0; }
  virtual std::string describe() const { return ""; }  // what a log line should say about the kernels
};

// Generation, one sequence on the CPU: each step feeds one token at the next position and returns the logits
// of the token after it. Keys and values of every earlier position stay in a cache (per layer, (maxT, kv width)),
// so a step costs one token's forward, not the whole prefix's.
class TokenGenerator {
 public:
  virtual ~TokenGenerator() = default;
  // The logits (V values, valid until the next step) after appending `token` (in [0, V)) at position(); throws
  // once the context maxT is full.
  virtual const float* step(std::int32_t token) = 0;
  virtual std::int64_t position() const = 0;  // tokens fed so far
};

// How a runner keeps activations: checkpoint_blocks = only each block's input is kept from the forward and the
// block's forward is recomputed in its backward (one block's activations instead of L; the same results bit for
// bit) ([runtime] activation_checkpointing = blocks).
struct RunnerOptions {
  bool checkpoint_blocks = false;
};

// The GPU attention kernels ([runtime] attention): fused tensor-core kernels that never store the T x T scores
// (bf16 models with head size 16, 32, 64 or 128), or cuBLAS batched GEMMs around softmax kernels (any model).
// auto = flash where it applies, else gemm.
enum class AttentionKernels { Auto, Flash, Gemm };
std::string_view attention_kernels_name(AttentionKernels a);  // "auto" | "flash" | "gemm"

// ---------------------------------------------------------------- checkpoint attributes

// One attribute of a checkpoint's /model group.
struct ModelAttribute {
  using Value = std::variant<std::int64_t, double, std::string>;
  std::string name;
  Value value;
};

// Where a family reads its attributes back from (a checkpoint file).
class AttributeSource {
 public:
  virtual ~AttributeSource() = default;
  virtual std::string where() const = 0;  // for errors: the file
  virtual bool has(const std::string& name) const = 0;
  virtual std::int64_t get_int(const std::string& name) const = 0;
  virtual double get_double(const std::string& name) const = 0;
  virtual std::string get_string(const std::string& name) const = 0;
};

// ---------------------------------------------------------------- a model and its family

class ModelFamily;

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelFamily& family() const = 0;
  virtual std::string describe() const = 0;           // "GPT-2 L=2 C=64 NH=4 V=256 Vp=256 maxT=64"
  virtual std::int64_t num_parameters() const = 0;    // elements of every parameter (padding included)
  virtual std::int64_t vocab_size() const = 0;        // tokens must lie in [0, V)
  // Training flops per token at sequence length T (forward + backward: 6 per weight, plus attention).
  virtual double flops_per_token(std::int64_t T) const = 0;
  // Throws UsageError when sequences of T tokens cannot run on this model.
  virtual void check_sequence_length(std::int64_t T) const = 0;

  virtual const std::vector<ModelUnit>& units() const = 0;
  // Every parameter in unit order.
  std::vector<ParamInfo> parameters() const;

  // Rows [begin, end) of a parameter's initial value (host f32, row-major; a 1-D parameter has one element per
  // row), the same on every rank: read from the file the model was loaded from, or computed by the seeded init.
  // Each rank initializes just its shard; no rank holds the whole model.
  virtual void initial_rows(const std::string& name, std::int64_t begin, std::int64_t end, float* out) const = 0;

  // What the checkpoint's /model group records (besides `architecture`, which is family().arch()).
  virtual std::vector<ModelAttribute> attributes() const = 0;
  // Formats the weights export to ("llmc", "safetensors", ...), and the export itself: `weights` gives every
  // parameter by name (host f32, global shape); `source` names where they came from (file metadata).
  virtual std::vector<std::string> export_formats() const = 0;
  virtual void export_weights(const std::string& format, const TensorLookup& weights, const std::string& path,
                              const std::string& source) const = 0;

  // Forward and backward on the CPU (f32).
  virtual std::unique_ptr<UnitRunner> cpu_runner(const RunnerOptions& opt = {}) const = 0;
  // Generation on the CPU with a KV cache, over every parameter as `weights` gives it (host f32, global shapes;
  // the tensors must outlive the generator).
  virtual std::unique_ptr<TokenGenerator> cpu_generator(const TensorLookup& weights) const = 0;
};

class ModelFamily {
 public:
  virtual ~ModelFamily() = default;
  virtual std::string_view arch() const = 0;   // "gpt2": [model] arch and the checkpoint's architecture attribute
  virtual std::string_view title() const = 0;  // "GPT-2"
  // The model [model] describes: weights from spec.init_from (checked, read by rows later), or from spec.seed.
  virtual std::unique_ptr<Model> create(const ModelSpec& spec) const = 0;
  // The model a checkpoint's /model attributes describe, with no initial values (for its shapes and exports).
  virtual std::unique_ptr<Model> from_attributes(const AttributeSource& attrs) const = 0;
};

// Throws a UsageError naming the model and `what` unless `tokens` is a contiguous host i32 (B, T) tensor with
// every token in [0, V).
void check_model_tokens(const Tensor& tokens, std::int64_t V, std::string_view model, const char* what);
// The same for a head's targets, which must also match the inputs' (B, T).
void check_model_targets(const Tensor& targets, std::int64_t V, std::int64_t B, std::int64_t T, std::string_view model);

// The registered families (models/families.cpp).
std::vector<std::string> model_family_names();
// The family called `arch`; UsageError naming the known ones otherwise.
const ModelFamily& model_family(std::string_view arch);
// model_family(spec.arch).create(spec).
std::unique_ptr<Model> make_model(const ModelSpec& spec);

}  // namespace orthoshard
