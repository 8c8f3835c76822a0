/* Prints the struct offsets ddprofiler reads in a CPython 3.8-3.12 process, from the
 * interpreter's own headers (compiled against each version: see gen.sh). The output is a
 * Rust expression of `cpython::offsets::Offsets`, pasted into rust/ddprof-core/src/cpython/
 * tables.rs. 3.13 and later describe themselves (_Py_DebugOffsets in _PyRuntime). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#if PY_VERSION_HEX >= 0x030b0000
#include <internal/pycore_frame.h>
#endif
#if PY_VERSION_HEX >= 0x03090000
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#else
#include <internal/pycore_pystate.h>
#endif
#if PY_VERSION_HEX < 0x030b0000
#include <frameobject.h>
#endif

#define P(field, expr) printf("        " #field ": %zu,\n", (size_t)(expr))

int main(void)
{
	printf("    // CPython %d.%d (headers of %s)\n", PY_MAJOR_VERSION, PY_MINOR_VERSION, PY_VERSION);
	printf("    Offsets {\n");
	printf("        minor: %d,\n", PY_MINOR_VERSION);
	P(runtime_interpreters_head, offsetof(_PyRuntimeState, interpreters.head));
#if PY_VERSION_HEX >= 0x030b0000
	P(interp_threads_head, offsetof(PyInterpreterState, threads.head));
#else
	P(interp_threads_head, offsetof(PyInterpreterState, tstate_head));
#endif
	P(tstate_next, offsetof(PyThreadState, next));
	P(tstate_thread_id, offsetof(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030b0000
	P(tstate_native_thread_id, offsetof(PyThreadState, native_thread_id));
	P(tstate_frame, offsetof(PyThreadState, cframe));
	P(cframe_current_frame, offsetof(_PyCFrame, current_frame));
	P(frame_code, offsetof(_PyInterpreterFrame, f_code));
	P(frame_previous, offsetof(_PyInterpreterFrame, previous));
	P(frame_instr, offsetof(_PyInterpreterFrame, prev_instr));
#if PY_VERSION_HEX >= 0x030c0000
	P(frame_entry, offsetof(_PyInterpreterFrame, owner));
#else
	P(frame_entry, offsetof(_PyInterpreterFrame, is_entry));
#endif
	P(frame_owner, offsetof(_PyInterpreterFrame, owner));
	P(code_qualname, offsetof(PyCodeObject, co_qualname));
	P(code_linetable, offsetof(PyCodeObject, co_linetable));
	P(code_adaptive, offsetof(PyCodeObject, co_code_adaptive));
#else
	P(tstate_native_thread_id, 0);
	P(tstate_frame, offsetof(PyThreadState, frame));
	P(cframe_current_frame, 0);
	P(frame_code, offsetof(PyFrameObject, f_code));
	P(frame_previous, offsetof(PyFrameObject, f_back));
	P(frame_instr, offsetof(PyFrameObject, f_lasti));
	P(frame_entry, 0);
	P(frame_owner, 0);
	P(code_qualname, 0);
#if PY_VERSION_HEX >= 0x030a0000
	P(code_linetable, offsetof(PyCodeObject, co_linetable));
#else
	P(code_linetable, offsetof(PyCodeObject, co_lnotab));
#endif
	P(code_adaptive, 0);
#endif
	P(code_filename, offsetof(PyCodeObject, co_filename));
	P(code_name, offsetof(PyCodeObject, co_name));
	P(code_firstlineno, offsetof(PyCodeObject, co_firstlineno));
	P(bytes_size, offsetof(PyVarObject, ob_size));
	P(bytes_sval, offsetof(PyBytesObject, ob_sval));
	P(unicode_state, offsetof(PyASCIIObject, state));
	P(unicode_length, offsetof(PyASCIIObject, length));
	P(unicode_ascii_size, sizeof(PyASCIIObject));
	P(unicode_compact_size, sizeof(PyCompactUnicodeObject));
	printf("    },\n");
	return 0;
}
