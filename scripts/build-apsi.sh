#!/usr/bin/env bash
# Build Microsoft APSI and its Python binding (PyAPSI) from source for this CPU, for
# scripts/peers.py --apsi-dir DIR (#13 item 3).
#
#     scripts/build-apsi.sh DIR
#
# Why from source: the only binary release, the `apsi==0.1.2` wheel, dies with SIGILL on CPUs
# without AVX-512 (its SEAL build uses AVX-512 instructions), and PyAPSI's later releases are
# source-only and fetch their dependencies with vcpkg. This script builds the same versions
# PyAPSI 0.2.3 pins (APSI 0.12.0, commit b967a12) against Microsoft SEAL 4.1.2 and Kuku 2.1.0,
# with Debian's flatbuffers, jsoncpp, GSL, zlib, zstd and pybind11, all with -O3 -march=native.
# FourQ's assembly (APSI's OPRF curve) is on, in its AVX variant: PyAPSI turns the assembly off
# because the AVX2 variant refers to its constants in a way a shared object cannot relocate, and
# the AVX2 variant, linked here with those constants hidden, answered "invalid point". The AVX
# variant (fp2_1271.S: field arithmetic with mulx/adx) links cleanly and passes the smoke test
# at the end.
#
# Sources: `git clone` from GitHub at the pinned revisions, or, when BREACHCHECK_GIT_MIRROR is
# set, `git archive` from bare repositories at $BREACHCHECK_GIT_MIRROR/<owner>+<name>/repo.
# Needs: cmake >= 3.16, g++, git, and the Debian packages below (installed if apt-get exists
# and they are missing). Result: DIR/apsi (the Python package) and DIR/_pyapsi*.so, for the
# python3 that ran this script (put DIR on its PYTHONPATH), and DIR/BUILT, a line saying what
# they are, written last.
set -euo pipefail

out=${1:?usage: scripts/build-apsi.sh DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/BUILT"  # until this build has passed its smoke test
work="$out/build"
prefix="$work/prefix"
python=${PYTHON:-python3}
jobs=$(nproc)

debs=(cmake g++ git libjsoncpp-dev libflatbuffers-dev flatbuffers-compiler libmsgsl-dev
      pybind11-dev libzstd-dev zlib1g-dev)
missing=()
for d in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "ok installed" || missing+=("$d")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    apt-get install -y -q "${missing[@]}" >&2
fi

# owner/name, revision, directory
sources=(
    "microsoft/SEAL v4.1.2 seal"
    "microsoft/Kuku v2.1.0 kuku"
    "microsoft/APSI b967a126b4e1c682b039afc2d76a98ea2c993230 apsi"
    "LGro/PyAPSI v0.2.3 pyapsi"
)
mkdir -p "$work/src"
for s in "${sources[@]}"; do
    read -r repo rev dir <<<"$s"
    [[ -d "$work/src/$dir" ]] && continue
    # Fetched under a temporary name and renamed, so an interrupted fetch is fetched again.
    tmp="$work/src/.$dir.partial"
    rm -rf "$tmp"
    mirror="${BREACHCHECK_GIT_MIRROR:-}/${repo/\//+}/repo"
    if [[ -n "${BREACHCHECK_GIT_MIRROR:-}" && -d "$mirror" ]]; then
        mkdir -p "$tmp"
        git -C "$mirror" archive "$rev" | tar -x -C "$tmp"
    else
        git init -q "$tmp"
        git -C "$tmp" fetch -q --depth 1 "https://github.com/$repo" "$rev"
        git -C "$tmp" checkout -q FETCH_HEAD
    fi
    mv "$tmp" "$work/src/$dir"
done

# Debian names the flatbuffers package FlatBuffers, gives flatc no Release location, and ships
# jsoncpp shared only; APSI 0.12 asks for Flatbuffers, flatbuffers::flatc and jsoncpp_static.
mkdir -p "$work/shim"
cat >"$work/shim/FlatbuffersConfig.cmake" <<'EOF'
include(/usr/lib/x86_64-linux-gnu/cmake/flatbuffers/FlatBuffersConfig.cmake)
set(Flatbuffers_FOUND TRUE)
if(NOT TARGET flatbuffers::flatc)
  add_executable(flatbuffers::flatc IMPORTED)
endif()
set_target_properties(flatbuffers::flatc PROPERTIES IMPORTED_LOCATION_RELEASE /usr/bin/flatc)
if(NOT TARGET jsoncpp_static)
  add_library(jsoncpp_static INTERFACE IMPORTED)
  set_target_properties(jsoncpp_static PROPERTIES
    INTERFACE_LINK_LIBRARIES /usr/lib/x86_64-linux-gnu/libjsoncpp.so
    INTERFACE_INCLUDE_DIRECTORIES /usr/include/jsoncpp)
endif()
EOF
# SEAL links zstd::libzstd_static, and Debian's libzstd.a is not position-independent, so the
# Python extension takes the shared library.
cat >"$work/shim/zstdConfig.cmake" <<'EOF'
set(zstd_FOUND TRUE)
if(NOT TARGET zstd::libzstd_static)
  add_library(zstd::libzstd_static UNKNOWN IMPORTED)
  set_target_properties(zstd::libzstd_static PROPERTIES
    IMPORTED_LOCATION /usr/lib/x86_64-linux-gnu/libzstd.so)
endif()
EOF
# PyAPSI's own CMakeLists.txt fetches pybind11 from GitHub and builds APSI as a subdirectory;
# this one uses Debian's pybind11 and the APSI installed above.
cat >"$work/src/pyapsi/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(_pyapsi CXX)
find_package(pybind11 CONFIG REQUIRED)
find_package(APSI 0.12 REQUIRED)
pybind11_add_module(_pyapsi src/main.cpp)
target_link_libraries(_pyapsi PRIVATE APSI::apsi)
EOF

common=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_INSTALL_PREFIX=$prefix" "-DCMAKE_PREFIX_PATH=$prefix"
        "-DFlatbuffers_DIR=$work/shim" "-Dzstd_DIR=$work/shim"
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON "-DCMAKE_CXX_FLAGS=-march=native"
        "-DCMAKE_C_FLAGS=-march=native")
build() {  # name, extra cmake flags...
    local name=$1
    shift
    echo "building $name" >&2
    cmake -S "$work/src/$name" -B "$work/b/$name" "${common[@]}" "$@" >"$work/$name.log"
    cmake --build "$work/b/$name" -j"$jobs" >>"$work/$name.log"
}
build seal -DSEAL_BUILD_DEPS=OFF -DSEAL_USE_INTEL_HEXL=OFF -DSEAL_THROW_ON_TRANSPARENT_CIPHERTEXT=OFF
cmake --install "$work/b/seal" >>"$work/seal.log"
build kuku -DKUKU_BUILD_TESTS=OFF -DKUKU_BUILD_EXAMPLES=OFF
cmake --install "$work/b/kuku" >>"$work/kuku.log"
build apsi -DAPSI_USE_LOG4CPLUS=OFF -DAPSI_USE_ZMQ=OFF \
    -DAPSI_BUILD_CLI=OFF -DAPSI_BUILD_TESTS=OFF -DAPSI_USE_ASM=ON -DAPSI_USE_AVX2=OFF -DAPSI_USE_AVX=ON
cmake --install "$work/b/apsi" >>"$work/apsi.log"
# fp2_1271.S has no .note.GNU-stack: without -z noexecstack the extension would ask for an
# executable stack.
build pyapsi "-DPYTHON_EXECUTABLE=$(command -v "$python")" \
    -DCMAKE_MODULE_LINKER_FLAGS=-Wl,-z,noexecstack

rm -rf "$out/apsi"
cp -r "$work/src/pyapsi/apsi" "$out/apsi"
cp "$work"/b/pyapsi/_pyapsi*.so "$out/"
# Smoke test: a small unlabeled PSI whose intersection is known (the parameters of PyAPSI's
# README example).
PYTHONPATH="$out" "$python" - <<'PY'
import apsi
p = """{"table_params": {"hash_func_count": 3, "table_size": 585, "max_items_per_bin": 180},
 "item_params": {"felts_per_item": 7},
 "query_params": {"ps_low_degree": 0, "query_powers": [1, 3, 4, 6, 10, 13, 15, 21, 29, 37, 45,
   53, 61, 69, 77, 81, 83, 86, 87, 90, 92, 96]},
 "seal_params": {"plain_modulus": 65537, "poly_modulus_degree": 4096,
   "coeff_modulus_bits": [40, 40, 24]}}"""
server = apsi.UnlabeledServer()
server.init_db(p)
server.add_items(["item", "abc", "other"])
client = apsi.UnlabeledClient(p)
query = client.build_query(server.handle_oprf_request(client.oprf_request(["item", "abc", "no"])))
found = sorted(client.extract_result(server.handle_query(query)))
assert found == ["abc", "item"], found
PY
# What was built, for scripts/peers.py's report.
echo "PyAPSI 0.2.3 over APSI 0.12.0, built from source with -march=native, FourQ assembly on" \
    >"$out/BUILT"
echo "built: PYTHONPATH=$out $python ($(cat "$out/BUILT"); smoke test passed)" >&2
