# Warnings for our own targets only (third-party headers come in as SYSTEM includes).
function(moeserve_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                                           -Wimplicit-fallthrough)
  if(MOESERVE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
