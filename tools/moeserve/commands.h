#ifndef MOESERVE_TOOLS_MOESERVE_COMMANDS_H_
#define MOESERVE_TOOLS_MOESERVE_COMMANDS_H_

#include <string>
#include <vector>

// Subcommands of the `moeserve` tool. Each takes the arguments after its name and returns the
// process exit code (0 ok, 2 bad usage or input, 1 other failure).
namespace moeserve::cli {

int RunMkmodel(const std::vector<std::string>& args);
int RunGenerate(const std::vector<std::string>& args);
int RunTokenize(const std::vector<std::string>& args);
int RunDetokenize(const std::vector<std::string>& args);
int RunUp(const std::vector<std::string>& args);
int RunStatus(const std::vector<std::string>& args);
int RunChat(const std::vector<std::string>& args);
int RunKeys(const std::vector<std::string>& args);

}  // namespace moeserve::cli

#endif  // MOESERVE_TOOLS_MOESERVE_COMMANDS_H_
