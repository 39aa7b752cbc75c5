include(GoogleTest)
# moeserve_add_test(NAME name SOURCES a.cc b.cc LIBS lib... LABELS unit)
function(moeserve_add_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  moeserve_warnings(${T_NAME})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  # One label per test (gtest_discover_tests keeps only the first of a list). Presets filter by
  # regular expression, so "unit-tsan" counts as unit (asan preset) and as tsan (tsan preset).
  if("unit" IN_LIST T_LABELS OR "unit-tsan" IN_LIST T_LABELS)
    # The sanitizer job builds only these (scripts/test.sh).
    add_dependencies(moeserve_unit_tests ${T_NAME})
  endif()
  if("unit-tsan" IN_LIST T_LABELS)
    # The ThreadSanitizer job builds only these (scripts/test.sh).
    add_dependencies(moeserve_tsan_tests ${T_NAME})
  endif()
  gtest_discover_tests(${T_NAME}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    # A hang fails the test after 5 minutes instead of stalling the whole run.
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT 300
    DISCOVERY_TIMEOUT 60)
endfunction()
