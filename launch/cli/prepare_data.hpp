// `orthoshard prepare-data TEXT... --out FILE.bin [--val-fraction F]`: byte-level tokens of the text files
// (concatenated in the order given) as an llm.c uint16 shard; with F > 0 the last F of the tokens go to
// FILE_val.bin instead (val_path_for).
#pragma once

#include <string>
#include <vector>

namespace orthoshard {

struct PrepareDataOptions {
  std::vector<std::string> inputs;
  std::string out;
  double val_fraction = 0.0;  // in [0, 1)
};

// FILE.bin -> FILE_val.bin; a name without .bin gets _val.bin appended.
std::string val_path_for(const std::string& out);
int run_prepare_data(const PrepareDataOptions& opt);

}  // namespace orthoshard
