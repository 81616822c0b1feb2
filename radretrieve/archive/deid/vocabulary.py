"""Words that look like names to the name detector and are not: eponyms of radiology (kept even after a cue
word, never propagated as a found name) and capitalised words that follow a role cue ("discussed with the
Emergency Department", "Patient: Female") without being names."""

from __future__ import annotations

# Eponyms of anatomy, signs, classifications and diseases that radiology reports use (lower case).
EPONYMS = frozenset(
    """
    addison alzheimer arnold baker barrett bartholin bennett bochdalek bosniak boerhaave bourneville brodie
    brown brown-sequard brown-séquard budd burkitt caroli chance charcot chiari chilaiditi colles conn cowper
    crohn cushing dandy dandy-walker denis dieulafoy dupuytren ebstein eisenmenger ewing fallot felty fleischner
    galeazzi gerota glisson graves grisel guyon hashimoto heschl hill-sachs hirschsprung hodgkin hoffa
    huntington jefferson kaposi kartagener kawasaki kerley kienbock kienböck klatskin klippel-feil krukenberg
    lisfranc ludwig luschka magendie maisonneuve mallory mallory-weiss marfan meckel meigs meniere ménière
    menetrier ménétrier monteggia morgagni morison morton neer osgood paget pancoast parkinson perthes peyronie
    poland pott rathke reiter riedel rolando salter salter-harris scheuermann schmorl schatzki segond sinding
    sjogren sjögren smith stener still sudeck takayasu tietze todd treitz virchow von wallerian waldeyer walker
    weber wegener whipple wilms wilson wolff zenker osgood-schlatter budd-chiari arnold-chiari legg-calve-perthes
    wolff-parkinson-white guillain-barre guillain-barré creutzfeldt-jakob non-hodgkin sturge-weber hippel-lindau
    von-hippel-lindau peutz-jeghers ehlers-danlos charcot-marie-tooth kasabach-merritt klippel-trenaunay
    hand-schuller-christian letterer-siwe erdheim-chester rosai-dorfman mayer-rokitansky-kuster-hauser
    lou gehrig lou-gehrig ramsay tourette asperger alport horner kussmaul kummell modic baastrup bertolotti
    """.split()
)

# Capitalised words that follow a cue without being a name (lower case).
NOT_NAMES = frozenset(
    """
    a an the this that these those he she they it his her their i we you on at in to of for by with and or
    no not yes none unknown n/a na nil same above below see as per from via
    emergency department ed er a&e icu clinic hospital radiology imaging team service unit centre center
    surgery surgical medicine medical oncology cardiology neurology orthopaedics orthopedics urology gynaecology
    gynecology obstetrics paediatrics pediatrics trauma stroke vascular thoracic chest breast on-call oncall
    attending resident fellow registrar consultant physician doctor nurse staff technologist radiographer
    patient family male female man woman boy girl adult child infant mr mrs ms dr prof
    findings impression history indication technique comparison conclusion report addendum clinical
    ct mri mr pet us xr cr dx nm ultrasound radiograph contrast left right bilateral normal stable
    telephone phone email e-mail fax voicemail person
    monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow
    born dob deceased died age aged year years old
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
    which what where when why how who whom whose is are was were does do did can could should would there here
    herr frau fräulein mme mlle monsieur madame señor señora sr sra dott sig
    """.split()
)

# Words of reports and study/series descriptions that are written capitalised ("CT Head Without Contrast",
# "Small Baker cyst", "Mild Degenerative Change") and are never read as a name (lower case).
REPORT_WORDS = frozenset(
    """
    head neck brain skull face facial orbit orbits sinus sinuses spine cervical thoracic lumbar sacral sacrum
    coccyx chest thorax lung lungs heart cardiac coronary aorta aortic abdomen abdominal pelvis pelvic liver
    hepatic spleen splenic pancreas pancreatic kidney kidneys renal adrenal bladder prostate uterus ovary
    ovaries bowel colon rectum stomach gastric esophagus oesophagus duodenum ileum jejunum appendix gallbladder
    biliary breast breasts shoulder elbow wrist hand hands finger fingers hip hips knee knees ankle foot feet
    toe toes femur tibia fibula humerus radius ulna clavicle scapula rib ribs pelvis extremity extremities
    upper lower whole body soft tissue tissues bone bones joint joints vessel vessels artery arteries vein veins
    venous arterial carotid vertebral cerebral intracranial temporal frontal parietal occipital pituitary
    thyroid parathyroid lymph node nodes mediastinum mediastinal hilar pleural pleura pericardial peritoneal
    with without w wo contrast iv oral non noncontrast enhanced unenhanced and or plus only complete limited
    views view single two three four portable ap pa lateral oblique axial sagittal coronal reformat reformats
    reconstruction reconstructions routine protocol study exam examination scan imaging scout localizer
    angiography angiogram venography arthrogram myelogram urogram enterography cholangiography mammogram
    mammography screening diagnostic tomosynthesis biopsy guided guidance drainage aspiration injection
    doppler duplex ultrasound sonography elastography fluoroscopy swallow barium esophagram perfusion
    diffusion spectroscopy functional dynamic delayed phase arterial portal venous early late high low
    resolution dose low-dose thin thick slice slices series image images sequence sequences weighted flair
    mild moderate severe small large tiny new old stable unchanged improved worsening increased decreased
    normal abnormal negative positive acute chronic subacute simple complex complicated benign malignant
    degenerative inflammatory infectious traumatic post pre status history clinical follow-up follow up
    findings finding impression indication indications technique comparison conclusion recommendation
    recommendations addendum procedure note notes summary report preliminary final amended
    mass masses nodule nodules lesion lesions cyst cysts tumor tumour fracture fractures effusion effusions
    edema oedema hemorrhage haemorrhage infarct infarction stroke aneurysm dissection stenosis occlusion
    thrombosis embolism pneumonia pneumothorax atelectasis consolidation opacity opacities calcification
    disease syndrome malformation anomaly sign signs fissure lobe lobes segment segments cortex medulla
    grade stage type class score category level levels zone region regions side sides margin margins
    right left bilateral anterior posterior superior inferior medial proximal distal central peripheral
    north south east west general memorial university medical health hospital clinic saint st center centre
    lymphoma carcinoma sarcoma adenoma adenocarcinoma metastasis metastases cyst fossa pouch space canal duct
    gland ligament tendon muscle nerve sulcus gyrus ventricle foramen hernia ulcer polyp diverticulum line lines
    classification criteria guidelines angle triangle ring point test phenomenon effect law rule method
    position maneuver manoeuvre operation repair shunt filter catheter tube stent device pump valve
    system systems respiratory nervous digestive urinary reproductive musculoskeletal cardiovascular
    basal ganglia ganglion nucleus pulposus annulus fibrosus rectus oblique obliquus psoas iliacus gluteus
    corpus callosum cerebellum cerebri cerebellar brainstem pons thalamus hypothalamus hippocampus amygdala
    caudate putamen globus pallidus internal external capsule vermis tonsil tonsils falx tentorium sella
    turcica circle willis vena cava portal hepatis porta splenic mesenteric celiac iliac femoral popliteal
    subclavian jugular azygos hemiazygos innominate brachiocephalic pulmonary bronchus bronchi trachea
    larynx pharynx nasopharynx oropharynx hypopharynx epiglottis vallecula piriform sinus mastoid petrous
    cribriform sphenoid ethmoid maxillary frontal zygomatic mandible maxilla hyoid atlas axis dens odontoid
    lamina pedicle facet spinous transverse process body disc disk cord conus cauda equina filum terminale
    map adc dwi swi gre tof flair stir t1 t2 pd
    """.split()
)

# What may not follow a title or a labelled field as a name: titles, pronouns, articles, headings, sexes.
AFTER_TITLE_STOP = frozenset(
    """
    the a an this that his her their he she they it i we you on at in to of for by with and or not no none
    dr drs mr mrs ms miss mx prof professor doctor sir dame nurse sister herr frau mme mlle
    unknown n/a na nil same above below see male female man woman boy girl adult child infant
    findings impression history indication technique comparison conclusion report addendum clinical
    dob born mrn acc accession id age sex gender dos date time exam study phone tel email fax address pager
    """.split()
)
