/* Stub TensorRT native libraries, for importing TensorRT's real Python bindings on a machine
 * without TensorRT (see ../shared/reference/tensorrt_api_notes.md). tensorrt_bindings/tensorrt.so
 * needs exactly these nine C functions from libnvinfer.so.N, libnvinfer_plugin.so.N and
 * libnvonnxparser.so.N; each returns 0 (a null object), so constructing a Builder or Runtime
 * raises a TypeError and nothing can run: the stubs are for import and inspection only.
 * setup.sh links this file three times per major version, with each library's soname. */
void *createInferBuilder_INTERNAL(void *logger, int version) { (void)logger; (void)version; return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { (void)engine; (void)logger; (void)version; return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { (void)logger; (void)version; return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { (void)network; (void)logger; (void)version; return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { (void)refitter; (void)logger; (void)version; return 0; }
void *getBuilderPluginRegistry(int capability) { (void)capability; return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { (void)logger; (void)ns; return 0; }
