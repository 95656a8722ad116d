/* Native hot path of the call tracer (placeholder until the tracer lands). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef ctracer_module = {
    PyModuleDef_HEAD_INIT, "_ctracer", "Native call tracer.", -1, NULL,
};

PyMODINIT_FUNC PyInit__ctracer(void) { return PyModule_Create(&ctracer_module); }
