// The reference of the trainer's configuration keys: every key of the one schema (train_config.hpp) with its type,
// default and meaning. `orthoshard train --help` prints it as text; docs/config.md is its markdown form, and a test
// fails when that file differs from what this writes (regenerate: `orthoshard train --config-reference > docs/config.md`).
#pragma once

#include <string>

namespace orthoshard {

std::string config_reference_text();      // for --help
std::string config_reference_markdown();  // docs/config.md
// Keys of the schema without a description (empty when the reference is complete; a test checks it).
std::string undocumented_config_keys();

}  // namespace orthoshard
